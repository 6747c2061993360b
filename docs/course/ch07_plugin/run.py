"""Chapter 7's script: scaffold a plugin, let the kit check it and yours, and train both beside a ViT.

    python docs/course/ch07_plugin/run.py              # the reference solutions, full run
    python docs/course/ch07_plugin/run.py --student    # your exercises.py
    python docs/course/ch07_plugin/run.py --quick      # a smoke run

1. `patchworld new plugin course_mixer --kind backbone` (the same function the command calls) writes a
   plugin package into a temporary folder; its module is imported from there.
2. `patchworld.plugins.build_registry` merges it with the first-party plugin and this chapter's module
   (solutions.py, or exercises.py with --student), as `load_plugins` merges installed plugins.
3. `patchworld.testing.check_backbone` checks the scaffold's `CourseMixer`, your `CourseBackbone` and a
   deliberately broken backbone that pools its tokens (its one-line error is printed).
4. The scaffold recipe's VideoMAE setup (4-frame 32x32 SyntheticWorld clips, 1x4x4 patches, 75% masked)
   trains each of ViT, CourseMixer and CourseBackbone, built from the registry by name, for the same steps.
Writes `plugin.png` (the three training-loss curves) into this folder or `--out DIR`.
"""
from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

import patchworld
from patchworld.course import save_figure, script_options, train


class Pooled(patchworld.Backbone):
    """A broken backbone: it averages its tokens into one vector per clip, (B, D) instead of (B, N, D)."""

    def __init__(self, dim: int = 32, patch_size: tuple[int, int, int] = (1, 4, 4)):
        super().__init__(dim, patch_size)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(dim, dim)])

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        return self.blocks[0](tokens + patchworld.sincos_3d(positions, self.dim)).mean(dim=1)  # (B, D): wrong


def checked(name: str, make) -> None:
    """Run the kit's backbone check and say what it found."""
    from patchworld.testing import check_backbone

    start = time.time()
    try:
        check_backbone(make)
        print(f"check_backbone({name}): passed in {time.time() - start:.1f} s")
    except patchworld.ContractError as error:
        print(f"check_backbone({name}): {error}")


def main() -> None:
    args = script_options(__file__, __doc__.split("\n\n")[0])
    ex = args.functions
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchworld.data.synthetic import SyntheticWorld
    from patchworld.plugins import FIRST_PARTY, build_registry, load_plugins
    from patchworld.scaffold import new_command

    start = time.time()
    steps = 5 if args.quick else 250
    with tempfile.TemporaryDirectory() as folder:
        new_command(load_plugins(), ["plugin", "course_mixer", "--kind", "backbone", "--directory", folder])
        print("\n".join(f"  {path.relative_to(folder)}" for path in sorted(Path(folder).rglob("*")) if path.is_file()))
        sys.path.insert(0, str(Path(folder) / "course_mixer"))
        scaffolded = importlib.import_module("course_mixer")
        registry = build_registry({FIRST_PARTY: importlib.import_module(FIRST_PARTY), "course_mixer": scaffolded,
                                   "course": ex})
        for name in ("ViT", "CourseMixer", "CourseBackbone"):
            cls, plugin = registry.components["backbone"][name]
            print(f"backbone {name:<15} from plugin {plugin!r} ({cls.__module__})")
        backbones = {name: registry.get("backbone", name) for name in ("ViT", "CourseMixer", "CourseBackbone")}
        checked("CourseMixer", lambda: backbones["CourseMixer"](dim=32, depth=1))
        checked("CourseBackbone", lambda: backbones["CourseBackbone"](dim=32, depth=2))
        checked("Pooled", Pooled)

        curves = {}
        for name, cls in backbones.items():
            pl.seed_everything(0, verbose=False)
            size = {"heads": 2} if name != "CourseMixer" else {}
            world = patchworld.WorldModel(
                tokenizer=registry.get("tokenizer", "Pixels")(),
                backbone=cls(dim=64, depth=2, patch_size=(1, 4, 4), **size),
                objective=registry.get("objective", "VideoMAE")(mask_ratio=0.75, predictor_dim=32, predictor_depth=1,
                                                               predictor_heads=2),
                warmup_steps=20)
            data = SyntheticWorld(frames=4, size=(32, 32), batch_size=8, train_size=4096, val_size=16)
            began = time.time()
            curves[name] = train(world, data, steps)
            parameters = sum(p.numel() for p in world.backbone.parameters())
            print(f"{name:<15} {parameters / 1e3:.0f}k parameters: loss {np.mean(curves[name][:10]):.3f} -> "
                  f"{np.mean(curves[name][-10:]):.3f} in {time.time() - began:.0f} s")

    figure, axis = plt.subplots(figsize=(6, 3.4))
    window = max(1, steps // 20)
    for name, losses in curves.items():
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")  # moving average
        axis.plot(np.arange(len(smooth)) + window, smooth, label=f"{name} ({registry.components['backbone'][name][1]})")
    axis.set_xlabel("step", fontsize=8), axis.set_ylabel(f"VideoMAE training loss ({window}-step mean)", fontsize=8)
    axis.legend(fontsize=8, title="backbone (plugin)", title_fontsize=8)
    axis.set_title(f"three plugins' backbones, one recipe ({'your functions' if args.student else 'solutions'})",
                   fontsize=9)
    figure.tight_layout()
    path = args.out / "plugin.png"
    save_figure(figure, path, dpi=64)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
