"""DiT throughput: forward+backward tokens/s and model FLOPs utilisation (MFU), fp32 vs bf16 autocast, against
a matmul peak measured in the same run; and the seconds to sample one 16-frame 64x64 video at 25 steps.

    python benchmarks/dit_throughput.py [--dim 256 --depth 6 --batch 4 --repeats 3 --device cpu]
                                        [--precisions fp32 bf16] [--attention full factorized] [--sample_steps 25]

MFU = (model FLOPs of one fwd+bwd, counted by torch.utils.flop_counter) / time / (peak matmul FLOP/s of a
large square matmul in the same precision). No assertions: it prints a table.
"""
from __future__ import annotations

import argparse
import time

import torch

from measure import matmul_peak, step_flops, sync
from patchworld import WorldModel
from patchworld_plugins import DiT, Flow, Pixels, TinyTextEncoder


def build(dim: int, depth: int, heads: int, factorized: bool, device: str) -> WorldModel:
    torch.manual_seed(0)
    world = WorldModel(Pixels(), Flow(progress=False), DiT(dim=dim, depth=depth, heads=heads, patch_size=(2, 4, 4),
                                                            factorized=factorized), TinyTextEncoder(dim=128))
    return world.to(device)


def train_step(world: WorldModel, batch: dict) -> None:
    world.zero_grad(set_to_none=True)
    world.objective.training_step(world, batch)["loss"].backward()


def throughput(world: WorldModel, batch: dict, autocast: bool, device: str, repeats: int) -> tuple[float, float]:
    """(seconds per fwd+bwd step, FLOPs per step)."""
    context = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast)
    with context:
        train_step(world, batch)  # warm-up
        flops = step_flops(lambda: train_step(world, batch))
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            train_step(world, batch)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return best, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample_steps", type=int, default=25, help="0: no sampling")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--attention", nargs="+", default=["full", "factorized"], choices=["full", "factorized"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = args.device
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size, device=device) * 2 - 1
    batch = {"video": video, "caption": ["a large red circle moves to the right slowly"] * args.batch}
    tokens_per_clip = (args.frames // 2) * (args.size // 4) ** 2
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {name: matmul_peak(dtypes[name], device) for name in args.precisions}
    print(f"DiT dim={args.dim} depth={args.depth} heads={args.heads}, patch 2x4x4, {args.batch} clips of "
          f"{args.frames}x{args.size}x{args.size} = {tokens_per_clip} tokens each, device {device}, "
          f"{torch.get_num_threads()} threads")
    print("matmul peak: " + ", ".join(f"{name} {peak / 1e9:.1f} GFLOP/s" for name, peak in peaks.items()) + "\n")
    print(f"{'attention':<11} {'precision':<10} {'s/step':>8} {'tokens/s':>10} {'GFLOP/step':>11} {'GFLOP/s':>8} {'MFU':>6}")
    for factorized in (kind == "factorized" for kind in args.attention):
        world = build(args.dim, args.depth, args.heads, factorized, device).train()
        for name in args.precisions:
            seconds, flops = throughput(world, batch, name == "bf16", device, args.repeats)
            rate = flops / seconds
            print(f"{'factorized' if factorized else 'full 3D':<11} {name:<10} {seconds:>8.3f} "
                  f"{args.batch * tokens_per_clip / seconds:>10.0f} {flops / 1e9:>11.1f} {rate / 1e9:>8.1f} "
                  f"{rate / peaks[name]:>6.1%}")

    world = build(args.dim, args.depth, args.heads, False, device).eval()
    one = video[:1]
    for name in args.precisions if args.sample_steps else []:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=name == "bf16"):
            sync(device)
            start = time.perf_counter()
            world.objective.generate(world, batch["caption"][:1], one, steps=args.sample_steps, progress=False)
            sync(device)
        print(f"\nsampling one {args.frames}x{args.size}x{args.size} video, {args.sample_steps} Euler steps with "
              f"classifier-free guidance ({name}): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
