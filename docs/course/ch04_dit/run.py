"""Chapter 4's script: train a small DiT with rectified flow, then animate still frames (i2v) and extend clips.

    python docs/course/ch04_dit/run.py              # the reference solutions, full run
    python docs/course/ch04_dit/run.py --student    # your exercises.py
    python docs/course/ch04_dit/run.py --quick      # a smoke run (seconds; the model learns nothing)

It builds the shipped `sora-tiny` recipe (Pixels -> DiT over 2x4x4 spacetime patches -> Flow, with the
tiny trainable text encoder in place of the recipe's MiniLM) through `patchworld.recipes.load_world`, trains it with Lightning on SyntheticWorld,
and writes `dit.png` (into this folder, or `--out DIR`): for test clips, the real clip, an i2v sample from
its first frame, and a clip extended forward window by window with `extend_forward_step` (given frames
framed in green), above the denoising error per latent frame with and without the first frame given,
computed with `clean_latent_frames` and `conditioned_input`.
"""
from __future__ import annotations

import time
from types import ModuleType

import numpy as np
import pytorch_lightning as pl
import torch

from patchworld.course import save_figure, script_options, train


def framed(video: torch.Tensor, given: torch.Tensor) -> np.ndarray:
    """One clip (3, T, H, W) in [-1, 1] -> an RGB strip (H + 4, T * (W + 4), 3) in [0, 1], given frames framed green."""
    _, T, H, W = video.shape
    frames = ((video.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    strip = np.ones((H + 4, T * (W + 4), 3))
    for f in range(T):
        left = f * (W + 4)
        if bool(given[f]):
            strip[:, left : left + W + 4] = (0.1, 0.8, 0.2)
        strip[2 : 2 + H, left + 2 : left + 2 + W] = frames[f]
    return strip


@torch.no_grad()
def error_per_frame(ex: ModuleType, world, video: torch.Tensor, captions: list[str], first_given: bool,
                    t: float = 0.5) -> np.ndarray:
    """Mean squared error of the velocity prediction on each latent frame (t,) at noise level `t`, with the
    first pixel frame given (i2v) or nothing given, through your `clean_latent_frames` and `conditioned_input`."""
    objective = world.objective
    given = torch.zeros(video.shape[0], video.shape[2], dtype=torch.bool)  # (B, T)
    given[:, 0] = first_given
    latents = world.tokenizer.encode(video).float()  # (B, c, t, h, w)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    times = torch.full((latents.shape[0],), t)
    clean = ex.clean_latent_frames(given, world.tokenizer)  # (B, t)
    x_t, _ = ex.conditioned_input(objective, latents, noise, times, clean)
    context, mask = objective.encode_captions(world, captions, latents.shape[0])
    prediction = objective.denoise(world, x_t, times, clean, context, mask)  # (B, c, t, h, w)
    error = (prediction - objective.target(latents, noise, times)).pow(2).mean(dim=(1, 3, 4))  # (B, t)
    return error.mean(0).numpy()


def main() -> None:
    args = script_options(__file__, __doc__.split("\n\n")[0])
    ex = args.functions
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchworld.recipes import load_world
    from patchworld_plugins.generation import given_mask, task_frames

    start = time.time()
    steps = 2 if args.quick else 300
    pl.seed_everything(0, verbose=False)
    tiny_text = ["--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "128",
                 "--model.conditioner.init_args.depth", "2", "--model.conditioner.init_args.heads", "4"]
    world, data = load_world("sora-tiny", overrides=[*tiny_text, "--data.init_args.val_size", "8",
                                                     "--data.init_args.test_size", "8"])
    losses = train(world, data, steps)
    trained = time.time() - start
    print(f"trained {steps} steps in {trained:.0f} s, loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}")

    world.eval()
    objective = world.objective
    objective.progress = False
    sampler_steps = 1 if args.quick else 25
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    video, captions = batch["video"][:3], batch["caption"][:3]  # (3, 3, 8, 32, 32)
    B, T = video.shape[0], video.shape[2]
    seeds = list(range(B))
    with torch.no_grad():
        i2v_given = given_mask(task_frames("i2v", T), T, B)  # (B, T): the first frame
        i2v = objective.generate(world, captions, video, i2v_given, steps=sampler_steps, seeds=seeds)
        context, window = 4, T
        extended, known = video[:, :, :context], [True] * context  # grows window by window
        for k in range(2):
            new = ex.extend_forward_step(objective, world, extended, context, window, [s + 10 * k for s in seeds],
                                         steps=sampler_steps, captions=captions)  # (B, 3, window, H, W)
            extended = torch.cat([extended, new[:, :, context:]], dim=2)
            known += [False] * (window - context)
    no_given = error_per_frame(ex, world, video, captions, first_given=False)
    first = error_per_frame(ex, world, video, captions, first_given=True)

    names = ("test clip", "i2v", "extended x2")
    figure = plt.figure(figsize=(8, 6))
    grid = figure.add_gridspec(3, 2, height_ratios=(1, 1, 1.1))
    for b in range(2):  # one picture per clip: its three strips stacked, padded to the longest
        strips = [framed(video[b], torch.zeros(T)), framed(i2v[b], i2v_given[b]),
                  framed(extended[b], torch.tensor(known))]
        width = max(s.shape[1] for s in strips)
        stacked = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=1.0)
                                  for s in strips])  # (3 * (H + 4), width, 3)
        axis = figure.add_subplot(grid[b, :])
        axis.imshow(stacked, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([(k + 0.5) * strips[0].shape[0] for k in range(3)], names, fontsize=8)
        axis.set_title(captions[b], fontsize=8, loc="left")
    axis = figure.add_subplot(grid[2, :])
    axis.plot(no_given, "o-", label="nothing given (t2v)")
    axis.plot(range(1, len(first)), first[1:], "s-", label="frame 0 given (i2v); frame 0 is not graded")
    axis.set_xlabel("latent frame"), axis.set_ylabel("velocity MSE at t=0.5")
    axis.legend(fontsize=8)
    figure.suptitle(f"sora-tiny DiT after {steps} steps ({'your functions' if args.student else 'solutions'}); "
                    "green = given frames", fontsize=9)
    figure.tight_layout()
    path = args.out / "dit.png"
    save_figure(figure, path, dpi=64)
    print(f"error per latent frame, nothing given: {[round(float(e), 3) for e in no_given]}")
    print(f"error per latent frame, frame 0 given: {[round(float(e), 3) for e in first]}")
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
