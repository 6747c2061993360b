"""Chapter 1's script: a SyntheticWorld clip cut into spacetime patches, the tokens in order, what the 3D sin-cos
positions know about spacetime, and a ViT built on your functions (`adapters.CourseViT`) trained with VideoMAE
at one size and run at a size it never saw.

    python docs/course/ch01_patches/run.py            # the reference solutions; --student: your exercises.py
    python docs/course/ch01_patches/run.py --quick    # a smoke run of a few seconds

Writes patches.png next to this file (or into --out DIR).
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from patchworld import WorldModel  # noqa: E402
from patchworld.course import load_module, save_figure, script_options, train  # noqa: E402
from patchworld.data import SyntheticWorld  # noqa: E402
from patchworld_plugins.pixels import Pixels  # noqa: E402
from patchworld_plugins.videomae import VideoMAE  # noqa: E402

adapters = load_module(Path(__file__).with_name("adapters.py"))
PATCH = (2, 16, 16)  # for the picture: big patches on a 64x64 clip


def image(frame: torch.Tensor):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return ((frame.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()


def show_patches(figure, grid, f, clip: torch.Tensor) -> None:
    """Row 1: the clip's frames with the patch grid; row 2: its tokens in order, one tile per token."""
    T = clip.shape[1]
    for i in range(T):
        axis = figure.add_subplot(grid[0, i])
        axis.imshow(image(clip[:, i]))
        for k in range(1, clip.shape[2] // PATCH[1]):
            axis.axhline(k * PATCH[1] - 0.5, color="w", lw=0.6)
            axis.axvline(k * PATCH[2] - 0.5, color="w", lw=0.6)
        axis.set_title(f"frame {i} (token row t={i // PATCH[0]})", fontsize=7)
        axis.axis("off")
    tokens = f.patchify(clip[None], PATCH)[0]  # (N, 3*pt*ph*pw)
    t, h, w = (n // p for n, p in zip(clip.shape[1:], PATCH))
    tiles = tokens.reshape(-1, 3, *PATCH)[:, :, 0]  # (N, 3, ph, pw): each token's first frame
    tiles = torch.nn.functional.pad(tiles, (1, 1, 1, 1), value=1.0)  # a white frame around each tile
    board = tiles.reshape(t, h * w, 3, PATCH[1] + 2, PATCH[2] + 2).permute(2, 0, 3, 1, 4).flatten(3, 4).flatten(1, 2)
    axis = figure.add_subplot(grid[1, :])
    axis.imshow(image(board))  # (3, t*(ph+2), h*w*(pw+2)): one line of tokens per token row t
    axis.set_title(f"patchify: the {t * h * w} tokens in order, one line per token row t (h, then w along it); "
                   "each tile is a token's first frame", fontsize=8)
    axis.axis("off")


def show_positions(figure, grid, f) -> None:
    """Row 3, left: cosine similarity of every position's sincos_3d features to those of one position."""
    size = (4, 12, 12)
    positions = f.grid_positions(*size)  # (576, 3)
    features = torch.nn.functional.normalize(f.sincos_3d(positions, 96), dim=-1)  # (576, 96)
    query = (1, 4, 6)
    similarity = (features @ features[(positions == torch.tensor(query)).all(-1)].T).reshape(size)  # (t, h, w)
    for t in range(size[0]):
        axis = figure.add_subplot(grid[2, t])
        axis.imshow(similarity[t].numpy(), vmin=float(similarity.min()), vmax=1, cmap="magma")
        label = f" (query {query})" if t == query[0] else ""
        axis.set_title(f"sincos_3d similarity, t={t}" if t == 0 else f"t={t}{label}", fontsize=7)
        axis.axis("off")


def train_vit(f, steps: int) -> tuple[list[float], dict[str, float]]:
    """VideoMAE with a CourseViT on 8x32x32 clips; its masked-reconstruction error on held-out clips at that
    size and at 8x48x64 (never seen: the positions are computed from the grid)."""
    torch.manual_seed(0)
    world = WorldModel(Pixels(), VideoMAE(mask_ratio=0.75, predictor_dim=64, predictor_depth=1, predictor_heads=2),
                       adapters.CourseViT(f, dim=64, depth=2, heads=2, patch_size=(2, 8, 8)), warmup_steps=20)
    losses = train(world, SyntheticWorld(frames=8, size=(32, 32), batch_size=8, max_objects=1, gravity_prob=0),
                   steps, progress=True)
    world.eval()
    errors = {}
    for size in ((32, 32), (48, 64)):
        clips = SyntheticWorld(frames=8, size=size, val_size=32, max_objects=1, gravity_prob=0).splits["val"]
        video = torch.stack([clips[i]["video"] for i in range(32)])
        with torch.no_grad():
            errors[f"{size[0]}x{size[1]}"] = float(world.objective.masked_errors(
                world, video, torch.Generator().manual_seed(0)).mean())
    return losses, errors


def main(argv: list[str] | None = None) -> Path:
    options = script_options(__file__, __doc__.splitlines()[0], argv)
    start = time.time()
    f = options.functions
    clips = SyntheticWorld(frames=8, size=(64, 64), val_size=4, max_objects=2, object_scale=1.6).splits["val"]
    clip = clips[1]["video"]  # (3, 8, 64, 64)
    losses, errors = train_vit(f, 3 if options.quick else 400)
    figure = plt.figure(figsize=(12, 7))
    grid = figure.add_gridspec(3, 8, height_ratios=(1.3, 1.3, 1.4))
    show_patches(figure, grid, f, clip)
    show_positions(figure, grid, f)
    axis = figure.add_subplot(grid[2, 4:])
    axis.plot(losses, lw=0.8)
    axis.set_xlabel("step", fontsize=7)
    axis.set_ylabel("masked MSE", fontsize=7)
    axis.set_title("VideoMAE on your patches: held-out error " + ", ".join(f"{k}: {v:.3f}" for k, v in errors.items())
                   + " (48x64 never seen)", fontsize=7)
    axis.tick_params(labelsize=6)
    figure.tight_layout()
    path = save_figure(figure, options.out / "patches.png")
    print(f"wrote {path} in {time.time() - start:.0f} s; held-out masked MSE: {errors}")
    return path


if __name__ == "__main__":
    main()
