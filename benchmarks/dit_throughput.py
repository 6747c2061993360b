"""DiT throughput: forward+backward tokens/s and model FLOPs utilisation (MFU), fp32 vs bf16 autocast, against
a matmul peak measured in the same run; and the seconds to sample one 16-frame 64x64 video at 25 steps with
classifier-free guidance, as one batched network call per step (what `generate` does) against two calls
(conditional, then unconditional: how guidance was sampled before it was batched), interleaved.

    python benchmarks/dit_throughput.py [--dim 256 --depth 6 --batch 4 --repeats 3 --device cpu]
                                        [--precisions fp32 bf16] [--attention full factorized]
                                        [--sample_steps 25 --sample_rounds 2]

MFU = (model FLOPs of one fwd+bwd, attention included: `measure.step_flops`) / time / (peak matmul FLOP/s of
a large square matmul in the same precision). No assertions: it prints a table.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

from measure import interleaved, matmul_peak, paired_ratios, step_flops, sync
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


@contextmanager
def guidance_in_two_calls(objective):
    """Inside: every guided network call of `objective.generate` (a batch of [conditional; unconditional])
    runs as two calls, one per half, and the halves are joined: the sampler before guidance was batched."""
    batched = objective.denoise

    def denoise(world, x_t, t, clean, context, context_mask):
        halves = zip(x_t.chunk(2), t.chunk(2), clean.chunk(2) if clean is not None else (None, None),
                     context.chunk(2), context_mask.chunk(2))
        return torch.cat([batched(world, *half) for half in halves])

    objective.denoise = denoise
    try:
        yield
    finally:
        del objective.denoise  # back to the class's batched method


def sampling_seconds(world: WorldModel, caption: str, video: torch.Tensor, steps: int, rounds: int,
                     bf16: bool, device: str) -> tuple[list[float], list[float]]:
    """Seconds per guided video, batched vs in two calls per step, over `rounds` interleaved rounds."""
    def sample() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            world.objective.generate(world, [caption], video, steps=steps, progress=False)

    def sample_in_two_calls() -> None:
        with guidance_in_two_calls(world.objective):
            sample()

    return interleaved(sample, sample_in_two_calls, rounds, device)


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
    parser.add_argument("--sample_rounds", type=int, default=2, help="interleaved rounds of one video each way")
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

    if not args.sample_steps:
        return
    world = build(args.dim, args.depth, args.heads, False, device).eval()
    print(f"\nsampling one {args.frames}x{args.size}x{args.size} video, {args.sample_steps} Euler steps, guidance "
          f"{world.objective.guidance}, {args.sample_rounds} interleaved rounds (median s per video)")
    print(f"{'precision':<10} {'batched':>8} {'2 calls':>8} {'2 calls / batched (min-max)':>28}")
    for name in args.precisions:
        batched, two_calls = sampling_seconds(world, batch["caption"][0], video[:1], args.sample_steps,
                                              args.sample_rounds, name == "bf16", device)
        ratio, low, high = paired_ratios(two_calls, batched)
        print(f"{name:<10} {statistics.median(batched):>8.2f} {statistics.median(two_calls):>8.2f} "
              f"{f'{ratio:.2f} ({low:.2f}-{high:.2f})':>28}")


if __name__ == "__main__":
    main()
