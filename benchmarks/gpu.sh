#!/usr/bin/env bash
# The performance benchmarks on one CUDA GPU, bf16 first: patchworld vs diffusers CogVideoX and pyjepa
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

echo; echo "== patchworld vs peers (bf16 autocast, then fp32) =="
timeout 240 python benchmarks/peers.py --device cuda --precisions bf16 fp32 --rounds 10
echo; echo "== DiT throughput, width 256 x 6 blocks =="
timeout 90 python benchmarks/dit_throughput.py --device cuda --batch 8 --repeats 5
echo; echo "== DiT throughput, width 512 x 12 blocks, 8 heads (the 30% bf16 MFU goal) =="
timeout 120 python benchmarks/dit_throughput.py --device cuda --dim 512 --depth 12 --heads 8 --batch 8 --repeats 5
echo; echo "== V-JEPA step =="
timeout 90 python benchmarks/vjepa_step.py --device cuda --steps 5
