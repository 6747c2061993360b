"""VAE throughput (frames/s): encode, decode and a training step, for each precision x memory layout x
convolution implementation asked for, printed as a table.

    python benchmarks/vae_throughput.py                       # the vae-tiny architecture, 17x64x64 clips
    python benchmarks/vae_throughput.py --precisions fp32 --formats channels_last_3d contiguous --convs onednn native
    python benchmarks/vae_throughput.py --compression 4 8 8 --width 32 --frames 17 --size 128

* formats: ``channels_last_3d`` (what `VAE` uses) or ``contiguous`` (PyTorch's default layout);
* convs: ``onednn`` (PyTorch's default CPU convolutions) or ``native`` (oneDNN off: ATen's own kernels);
* train: one VAEReconstruction step (forward, loss, backward, AdamW) on the vae-tiny recipe's batch of 8
  5-frame clips cropped to 32x32, counted in training frames per second.

No assertions: the numbers depend on the machine; ratios are against the first row, measured in the same run.
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from measure import sync
from patchworld import WorldModel
from patchworld_plugins.vae import VAE, VAEReconstruction

FORMATS = {"channels_last_3d": torch.channels_last_3d, "contiguous": torch.contiguous_format}


def frames_per_second(fn, frames: int, repeats: int, device: str) -> float:
    fn()  # warm-up (oneDNN picks its kernels on the first call)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return frames * repeats / (time.perf_counter() - start)


def build(args, memory_format: torch.memory_format) -> VAE:
    VAE.memory_format = memory_format  # read by the constructor and by every encode/decode
    torch.manual_seed(0)
    return VAE(args.compression, args.latent_channels, args.width, args.multipliers, args.blocks).to(args.device)


def measure(args, precision: str, layout: str, conv: str) -> tuple[float, float, float]:
    """(encode, decode, train) frames/s for one configuration."""
    vae = build(args, FORMATS[layout])
    device = args.device
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size, device=device) * 2 - 1
    torch.backends.mkldnn.enabled = conv == "onednn"  # for the rest of this configuration
    with torch.no_grad(), autocast:
        latents = vae.encode(video)

    def encode():
        with torch.no_grad(), autocast:
            vae.encode(video)

    def decode():
        with torch.no_grad(), autocast:
            vae.decode(latents)

    world = WorldModel(vae, VAEReconstruction(kl_weight=1e-6)).to(device)
    optimizer = torch.optim.AdamW(world.parameters(), lr=1e-4)
    clips = torch.rand(args.train_batch, 3, args.train_frames, args.train_crop, args.train_crop, device=device) * 2 - 1

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = world.objective.training_step(world, {"video": clips})["loss"]
        loss.backward()
        optimizer.step()

    frames = args.batch * args.frames
    return (frames_per_second(encode, frames, args.repeats, device),
            frames_per_second(decode, frames, args.repeats, device),
            frames_per_second(train, args.train_batch * args.train_frames, args.repeats, device))


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
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-frames", type=int, default=5)
    parser.add_argument("--train-crop", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--formats", nargs="+", default=["channels_last_3d"], choices=list(FORMATS))
    parser.add_argument("--convs", nargs="+", default=["onednn"], choices=["onednn", "native"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vae = build(args, torch.channels_last_3d)
    grid = vae.latent_grid(args.frames, args.size, args.size)
    print(f"VAE compression {tuple(args.compression)}, {args.latent_channels} latent channels, "
          f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters; encode/decode {args.batch} clips "
          f"{args.frames}x{args.size}x{args.size} -> latents {(args.latent_channels, *grid)}; train {args.train_batch} "
          f"clips {args.train_frames}x{args.train_crop}x{args.train_crop}; {args.threads} threads, {args.repeats} repeats")
    print(f"{'precision':<9} {'layout':<17} {'conv':<7} {'encode f/s':>10} {'decode f/s':>10} {'train f/s':>10} "
          f"{'vs first row (enc/dec/train)':>29}")
    first = None
    for precision, layout, conv in itertools.product(args.precisions, args.formats, args.convs):
        row = measure(args, precision, layout, conv)
        first = first or row
        ratios = "/".join(f"{value / base:.2f}" for value, base in zip(row, first))
        print(f"{precision:<9} {layout:<17} {conv:<7} {row[0]:>10.1f} {row[1]:>10.1f} {row[2]:>10.1f} {ratios:>29}")


if __name__ == "__main__":
    main()
