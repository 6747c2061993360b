"""Tiled / chunked VAE encode and decode: peak memory and wall time against video length and size, tiled vs
untiled, and what spatial tiles cost in PSNR. Prints two tables.

    python benchmarks/vae_tiling.py                          # the trained VAE of runs/vae-tiny
    python benchmarks/vae_tiling.py --checkpoint vae.safetensors --tile_frames 8 --tile_size 64 --tile_overlap 16

Memory: every (length, size, tiled or not) runs in a fresh Python process, which encodes then decodes
`--clips` SyntheticWorld clips once, after a warm-up on a 1-frame 16x16 clip. What is reported is that
process's peak resident set size (VmHWM, reset through /proc/self/clear_refs just before the work) above
its resident set size at that moment, when the model and the input clips are already in memory: the memory
the encode and decode take, output included, and what the allocator and oneDNN keep besides (their caches,
which do not grow with the video). A CPU has no allocator statistics; RSS is the memory that can run out.

Time: the same single run, so it includes oneDNN building its kernels for every shape it has not seen (the
warm-up covers none of the full-size shapes); tiled runs meet more shapes (first chunk, later chunks, edge
tiles), so their times are upper bounds.

Quality: PSNR against the original clips of the untiled and the tiled reconstruction (encode and decode both
tiled), the difference (the cost of tiling; time chunks alone are exact, so only spatial tiles cost), and
the PSNR of the tiled decode against the untiled one (same latents).

No assertions: times depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def load_vae(args, tiled: bool):
    from patchworld_plugins.vae import VAE

    options = {"tile_frames": args.tile_frames, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}
    return VAE(checkpoint=args.checkpoint, **(options if tiled else {}))


def clips(count: int, frames: int, size: int) -> torch.Tensor:
    from patchworld.data.synthetic import SyntheticClips

    data = SyntheticClips(count, "test", frames=frames, size=(size, size))
    return torch.stack([data[i]["video"] for i in range(count)])  # (count, 3, frames, size, size)


def child(args) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    torch.set_num_threads(args.threads)
    vae = load_vae(args, args.tiled)
    video = clips(args.clips, args.frames, args.size)
    with torch.no_grad():
        vae.decode(vae.encode(video[:, :, :1, :16, :16]))  # warm-up: loads oneDNN
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        before = status_kib("VmRSS")
        start = time.perf_counter()
        latents = vae.encode(video)
        middle = time.perf_counter()
        vae.decode(latents)
        end = time.perf_counter()
        peak = status_kib("VmHWM") - before
    print(json.dumps({"encode_s": middle - start, "decode_s": end - middle, "peak_mib": peak / 1024,
                      "input_mib": video.numel() * 4 / 2**20}))


def quality(args) -> list[dict]:
    """PSNR of untiled and tiled reconstructions for each tile size, in this process."""
    from patchworld_plugins.vae import psnr

    torch.set_num_threads(args.threads)
    whole = load_vae(args, False)
    rows = []
    for size in (args.size, 2 * args.size):
        video = clips(args.clips, args.frames, size)
        with torch.no_grad():
            latents = whole.encode(video)
            untiled = whole.decode(latents).clamp(-1, 1)
            for tile in args.psnr_tiles:
                tiled_vae = load_vae(argparse.Namespace(**{**vars(args), "tile_size": tile}), True)
                tiled = tiled_vae.decode(tiled_vae.encode(video)).clamp(-1, 1)
                rows.append({"size": size, "tile": tile, "untiled": psnr(untiled, video).mean().item(),
                             "tiled": psnr(tiled, video).mean().item(),
                             "decode_only": psnr(tiled_vae.decode(latents), untiled).mean().item()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/vae-tiny", help="a trained VAE (.ckpt, .safetensors or a run dir)")
    parser.add_argument("--frames", type=int, default=17, help="clip length at 1x (T = 1 + 2k for vae-tiny)")
    parser.add_argument("--size", type=int, default=64, help="H = W at 1x")
    parser.add_argument("--clips", type=int, default=1, help="clips per measurement and in the PSNR table")
    parser.add_argument("--tile_frames", type=int, default=8)
    parser.add_argument("--tile_size", type=int, default=64, help="the 1x size: a 2x-larger video in 1x tiles")
    parser.add_argument("--tile_overlap", type=int, default=16)
    parser.add_argument("--psnr_tiles", type=int, nargs="+", default=[32, 48, 64], help="tile sizes of the PSNR table")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    common = ["--checkpoint", args.checkpoint, "--clips", str(args.clips), "--tile_frames", str(args.tile_frames),
              "--tile_size", str(args.tile_size), "--tile_overlap", str(args.tile_overlap), "--threads", str(args.threads)]
    print(f"VAE {args.checkpoint}, {args.clips} SyntheticWorld clips, {args.threads} threads, fp32; tiled = tile_frames "
          f"{args.tile_frames}, tile_size {args.tile_size}, tile_overlap {args.tile_overlap}\n")
    print("| clip (T x H x W) | input MiB | untiled peak MiB | tiled peak MiB | untiled enc + dec s | tiled enc + dec s |")
    print("|---|---|---|---|---|---|")
    for scale in (1, 2):
        for length in (1, 2, 4):
            frames, size = 1 + (args.frames - 1) * length, args.size * scale
            result = {}
            for tiled in (False, True):
                command = [sys.executable, __file__, "--child", *common, "--frames", str(frames), "--size", str(size)]
                out = subprocess.run(command + (["--tiled"] if tiled else []), capture_output=True, text=True, check=True)
                result[tiled] = json.loads(out.stdout.strip().splitlines()[-1])
            u, t = result[False], result[True]
            print(f"| {frames} x {size} x {size} | {u['input_mib']:.1f} | {u['peak_mib']:.0f} | {t['peak_mib']:.0f} | "
                  f"{u['encode_s']:.2f} + {u['decode_s']:.2f} | {t['encode_s']:.2f} + {t['decode_s']:.2f} |", flush=True)

    print(f"\nPSNR (dB) against the original clips ({args.frames} frames; tiled: tile_frames {args.tile_frames}, "
          f"tile_overlap {args.tile_overlap})\n")
    print("| frame size | tile_size | untiled | tiled | cost | tiled vs untiled decode (same latents) |")
    print("|---|---|---|---|---|---|")
    for row in quality(args):
        print(f"| {row['size']}x{row['size']} | {row['tile']} | {row['untiled']:.2f} | {row['tiled']:.2f} | "
              f"{row['untiled'] - row['tiled']:.2f} | {row['decode_only']:.1f} |")


if __name__ == "__main__":
    main()
