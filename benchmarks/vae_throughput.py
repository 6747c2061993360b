"""VAE encode and decode throughput (frames/s) on CPU, fp32 against bf16 autocast, printed as a table.

    python benchmarks/vae_throughput.py                       # the vae-tiny architecture, 17x64x64 clips
    python benchmarks/vae_throughput.py --compression 4 8 8 --width 32 --frames 17 --size 128

No assertions: the numbers depend on the machine; the ratio column is bf16 against fp32 in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch

from patchworld_plugins.vae import VAE


def frames_per_second(fn, frames: int, repeats: int) -> float:
    fn()  # warm-up (oneDNN picks its kernels on the first call)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return frames * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compression", type=int, nargs=3, default=[2, 4, 4])
    parser.add_argument("--latent-channels", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--multipliers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 1])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    vae = VAE(args.compression, args.latent_channels, args.width, args.multipliers, args.blocks).eval()
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video)
    frames = args.batch * args.frames
    print(f"VAE compression {tuple(args.compression)}, {args.latent_channels} latent channels, "
          f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters; batch of {args.batch} clips "
          f"{args.frames}x{args.size}x{args.size} -> latents {tuple(latents.shape[1:])}; {args.threads} threads")
    rows = {}
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

        def encode():
            with torch.no_grad(), autocast:
                vae.encode(video)

        def decode():
            with torch.no_grad(), autocast:
                vae.decode(latents)

        rows[precision] = (frames_per_second(encode, frames, args.repeats), frames_per_second(decode, frames, args.repeats))
    print(f"{'precision':<10} {'encode frames/s':>16} {'decode frames/s':>16}")
    for precision, (enc, dec) in rows.items():
        print(f"{precision:<10} {enc:>16.1f} {dec:>16.1f}")
    (e32, d32), (e16, d16) = rows["fp32"], rows["bf16"]
    print(f"{'bf16/fp32':<10} {e16 / e32:>15.2f}x {d16 / d32:>15.2f}x")


if __name__ == "__main__":
    main()
