#!/usr/bin/env bash
# On one CUDA GPU: first every shipped recipe's fast_dev_run in bf16-mixed (the VAE-loading ones on a one-step
# vae-tiny), then the performance benchmarks, bf16 first: patchworld vs diffusers CogVideoX and pyjepa
# (benchmarks/peers.py), the DiT throughput / MFU table at widths 256 and 512 (the >= 30% bf16 MFU goal) and
# the V-JEPA step. Each part has its own time limit; the whole run stays under 10 minutes on one GPU.
#
#   pip install -e ".[bench]" && bash benchmarks/gpu.sh
#
# Without a CUDA device it says so in one line and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu.sh: no CUDA device (torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU" >&2
  exit 1
fi
python -c "import torch; print(f'device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}')"

echo; echo "== every shipped recipe: fast_dev_run in bf16-mixed on CUDA =="
runs=$(mktemp -d)
on_gpu=(--trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed --trainer.logger false
        --trainer.enable_progress_bar false)
timeout 120 patchworld fit --config vae-tiny "${on_gpu[@]}" --trainer.max_steps 1 --trainer.max_time null \
  --trainer.limit_val_batches 0 --trainer.default_root_dir "$runs/vae-tiny" > "$runs/vae-tiny.log" 2>&1 \
  || { tail -n 5 "$runs/vae-tiny.log"; echo "gpu.sh: a one-step vae-tiny failed" >&2; exit 1; }
failed=0
for recipe in recipes/*.yaml; do
  grep -q '^model:' "$recipe" || continue  # a study config, not a recipe
  name=$(basename "$recipe" .yaml)
  vae=(); grep -q 'checkpoint: runs/vae-tiny' "$recipe" && vae=(--model.tokenizer.init_args.checkpoint "$runs/vae-tiny")
  start=$SECONDS
  if timeout 120 patchworld fit --config "$recipe" "${on_gpu[@]}" --trainer.fast_dev_run true "${vae[@]}" \
       --trainer.default_root_dir "$runs/$name" > "$runs/$name.log" 2>&1; then
    printf '  %-20s ok      %3d s\n' "$name" $((SECONDS - start))
  else
    printf '  %-20s FAILED  %3d s: %s\n' "$name" $((SECONDS - start)) "$(grep -m1 'error' "$runs/$name.log" || tail -n 1 "$runs/$name.log")"
    failed=1
  fi
done
[ "$failed" = 0 ] || { echo "gpu.sh: a shipped recipe failed on CUDA in bf16-mixed (above); timings not run" >&2; exit 1; }

echo; echo "== patchworld vs peers (bf16 autocast, then fp32) =="
timeout 240 python benchmarks/peers.py --device cuda --precisions bf16 fp32 --rounds 10
echo; echo "== DiT throughput, width 256 x 6 blocks =="
timeout 90 python benchmarks/dit_throughput.py --device cuda --batch 8 --repeats 5
echo; echo "== DiT throughput, width 512 x 12 blocks, 8 heads (the 30% bf16 MFU goal) =="
timeout 120 python benchmarks/dit_throughput.py --device cuda --dim 512 --depth 12 --heads 8 --batch 8 --repeats 5
echo; echo "== V-JEPA step =="
timeout 90 python benchmarks/vjepa_step.py --device cuda --steps 5
