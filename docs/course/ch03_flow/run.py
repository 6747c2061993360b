"""Chapter 3's script: rectified flow on your functions (`adapters.CourseFlow`: your noised, velocity_target and
euler_step) trains a small text-to-image DiT on SyntheticWorld stills (1-frame videos), then samples with your
euler_step and guided_velocity: the path from noise to image for a few prompts, and the same seeds at
guidance 1, 3 and 6.

    python docs/course/ch03_flow/run.py            # the reference solutions; --student: your exercises.py
    python docs/course/ch03_flow/run.py --quick    # a smoke run of a few seconds

Writes flow.png next to this file (or into --out DIR).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from patchworld import WorldModel  # noqa: E402
from patchworld.course import load_module, save_figure, script_options, train  # noqa: E402
from patchworld.data import SyntheticWorld  # noqa: E402
from patchworld_plugins.dit import DiT  # noqa: E402
from patchworld_plugins.pixels import Pixels  # noqa: E402
from patchworld_plugins.text import TinyTextEncoder  # noqa: E402

adapters = load_module(Path(__file__).with_name("adapters.py"))
SIZE = (1, 16, 16)  # (T, H, W): stills
PROMPTS = ["a large red circle", "a large blue square", "a large yellow triangle", "a large green diamond"]
STEPS, SHOWN = 20, (0, 5, 10, 15)  # sampling steps, and the steps whose x_t the picture shows


def image(frame: torch.Tensor):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return ((frame.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()


@torch.no_grad()
def sample(world, f, guidance: float, seeds: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Euler sampling with your euler_step and guided_velocity: the samples (B, 3, 1, H, W) and x_t at the
    SHOWN steps."""
    model = adapters.guided_model(world, f, PROMPTS, guidance)
    x = adapters.seeded_noise(world, SIZE, seeds)  # (B, 3, 1, H, W)
    tokens = math.prod(world.tokenizer.latent_grid(*SIZE)) // math.prod(world.backbone.patch_size)
    times = world.objective.schedule(STEPS, tokens).float()  # (STEPS + 1,) from 1 to 0
    path = []
    for i in range(STEPS):
        if i in SHOWN:
            path.append(x)
        x = f.euler_step(x, model(x, times[i]), times[i], times[i + 1])
    return x.clamp(-1, 1), path


def main(argv: list[str] | None = None) -> Path:
    options = script_options(__file__, __doc__.splitlines()[0], argv)
    start, f = time.time(), options.functions
    torch.manual_seed(0)
    world = WorldModel(Pixels(), adapters.CourseFlow(f, logit_std=2.0, caption_dropout=0.1),
                       DiT(dim=64, depth=2, heads=2, patch_size=(1, 2, 2)), TinyTextEncoder(dim=64, depth=1, heads=2),
                       warmup_steps=30, optimizer=lambda groups: torch.optim.AdamW(groups, lr=2e-3, weight_decay=0.01,
                                                                                     betas=(0.9, 0.99)))
    data = SyntheticWorld(frames=1, size=SIZE[1:], batch_size=32, train_size=100000, max_objects=1, gravity_prob=0,
                          object_scale=2.5)
    losses = train(world, data, 3 if options.quick else 800, progress=True)
    world.eval()
    seeds = list(range(len(PROMPTS)))
    samples = {g: sample(world, f, g, seeds) for g in (1.0, 3.0, 6.0)}
    times = world.objective.schedule(STEPS, 64)

    columns = len(SHOWN) + 1 + 3
    figure = plt.figure(figsize=(12, 6.4))
    grid = figure.add_gridspec(len(PROMPTS) + 1, columns + 1, height_ratios=(1,) * len(PROMPTS) + (1.6,))
    for row, prompt in enumerate(PROMPTS):
        final, path = samples[3.0]
        shown = [(f"x_t, t={float(times[s]):.2f}", x[row]) for s, x in zip(SHOWN, path)] + [("sample (t=0)", final[row])]
        shown += [(f"guidance {g:g}", samples[g][0][row]) for g in (1.0, 3.0, 6.0)]
        for column, (name, x) in enumerate(shown):
            axis = figure.add_subplot(grid[row, column + (column > len(SHOWN))])  # a gap before the sweep
            axis.imshow(image(x[:, 0]))
            axis.set_xticks([]), axis.set_yticks([])
            axis.set_title(name if row == 0 else "", fontsize=7)
            axis.set_ylabel(prompt.removeprefix("a large ") if column == 0 else "", fontsize=7)
    axis = figure.add_subplot(grid[-1, :])
    axis.plot(losses, lw=0.5, alpha=0.5)
    window = max(1, len(losses) // 50)
    axis.plot(torch.tensor(losses).unfold(0, window, 1).mean(1).numpy() if len(losses) >= window else losses, lw=1.2)
    axis.set_title("training loss (velocity MSE) of the DiT on your noised / velocity_target; left: guidance 3 from "
                   "noise to image, right: the same seeds at guidance 1, 3, 6", fontsize=8)
    axis.set_xlabel("step", fontsize=7)
    axis.tick_params(labelsize=6)
    figure.tight_layout()
    path = save_figure(figure, options.out / "flow.png")
    print(f"wrote {path} in {time.time() - start:.0f} s; final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return path


if __name__ == "__main__":
    main()
