"""Training from a latent cache vs from the VAE: the step time of sora-tiny-vae both ways, in the same process,
interleaved, with medians and their paired ratio; the time to get a batch both ways; and the cache's size per
clip. Prints one table.

    python benchmarks/cache.py                               # sora-tiny-vae on the VAE of runs/vae-tiny
    python benchmarks/cache.py --vae vae.safetensors --clips 256 --rounds 10 --conditioner TinyTextEncoder

* step: the objective's training step (the VAE encode of the batch, or none from the cache), backward and the
  optimizer step, on a batch already in memory, fp32 (this CPU has no native bf16);
* batch: rendering one SyntheticWorld batch (the recipe's 16 clips of 9x32x32) vs reading one cached batch
  from its shard (the data a step waits for when the loader has no workers);
* size: the shards' bytes (latents fp32, labels, indices, captions, and caption embeddings with a frozen
  conditioner) per clip, next to the clip's own float32 pixels.

No assertions: the numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from measure import interleaved
from patchworld.recipes import load_world
from patchworld.model import parameter_groups
from patchworld_plugins.cache import LatentCache, build_cache, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default="runs/vae-tiny", help="the frozen VAE (a checkpoint or run directory)")
    parser.add_argument("--clips", type=int, default=128, help="clips to cache")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of one step each way")
    parser.add_argument("--conditioner", default=None, help="another conditioner for the recipe (default its MiniLM), e.g. TinyTextEncoder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = ["--model.tokenizer.init_args.checkpoint", args.vae, "--trainer.precision", "32-true"]
    if args.conditioner:
        overrides += ["--model.conditioner", args.conditioner]
    world, data = load_world("sora-tiny-vae", overrides=overrides)
    world.train()
    optimizer = torch.optim.AdamW(parameter_groups(world), lr=2e-3, fused=True)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        build_cache(world, data, folder, clips=args.clips, progress=False)
        build_s = time.perf_counter() - start
        manifest = read_manifest(folder)
        size = sum(shard["bytes"] for shard in manifest["shards"]) / manifest["clips"]
        cache = LatentCache(folder, shuffle=False)
        cache.setup("fit")
        cached_batches = cache.datasets["train"]
        loader = iter(data.train_dataloader())
        video_batches = [next(loader) for _ in range(len(cached_batches))]
        world.train()
        picks = iter(range(10**9))
        current: dict[str, dict] = {}

        def step(batch: dict) -> None:
            optimizer.zero_grad(set_to_none=True)
            world.objective.training_step(world, batch)["loss"].backward()
            optimizer.step()

        def draw_inputs() -> None:
            i = next(picks) % len(cached_batches)
            current["video"], current["cache"] = video_batches[i], cached_batches[i]

        step(video_batches[0])  # warm-up
        step(cached_batches[0])
        from_vae, from_cache = interleaved(lambda: step(current["video"]), lambda: step(current["cache"]),
                                           args.rounds, "cpu", draw_inputs)
        render, read = interleaved(lambda: next(loader), lambda: cached_batches[next(picks) % len(cached_batches)],
                                   args.rounds, "cpu")

    pixels = 3 * 9 * 32 * 32 * 4
    ratios = sorted(v / c for v, c in zip(from_vae, from_cache))
    print(f"sora-tiny-vae ({type(world.conditioner).__name__} conditioner), VAE {args.vae}, batch "
          f"{manifest['batch_size']} x 9x32x32, fp32, {args.threads} threads, {args.rounds} interleaved rounds\n")
    print("| | from the VAE | from the cache | ratio (VAE / cache, median of paired rounds) |")
    print("|---|---|---|---|")
    print(f"| training step, median s | {statistics.median(from_vae):.3f} | {statistics.median(from_cache):.3f} | "
          f"{statistics.median(ratios):.2f}x (range {ratios[0]:.2f}-{ratios[-1]:.2f}) |")
    print(f"| getting a batch, median s | {statistics.median(render):.4f} (render) | {statistics.median(read):.4f} "
          f"(read shard) | {statistics.median(render) / statistics.median(read):.1f}x |")
    print(f"\ncache: {manifest['clips']} clips in {len(manifest['shards'])} shards, built in {build_s:.1f} s "
          f"({manifest['clips'] / build_s:.0f} clips/s); {size / 1024:.1f} KiB per clip "
          f"(the clip's float32 pixels: {pixels / 1024:.1f} KiB, {pixels / size:.1f}x more)")


if __name__ == "__main__":
    main()
