"""The contestants of a comparison: each model of a study (trained here to a matched FLOP budget, loaded
from a checkpoint, or at its seeded random initialisation), its random-init control, and the baselines
(raw pixels, an untrained network). `Contestants.prepare` gives each as (model, frames, cost)."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..checkpoints import check_fits, load_checkpoint
from ..data.video_io import atomic_path
from ..errors import ComponentError, PatchworldError
from ..patches import grid_positions, patchify
from ..plugins import load_plugins
from ..recipes import PatchworldCLI, resolve_recipe_args
from .clips import DataSpec, training_data
from .cost import PeakMemory, count_parameters, train_step_flops
from .reuse import file_text, read_stamp, write_stamp


@dataclass
class ModelSpec:
    """One model of the study.

    name: its label in tables and plots.
    recipe: the recipe it is trained from (a path or a shipped recipe name).
    checkpoint: a patchworld .ckpt to load instead of training (the recipe is then optional).
    overrides: extra CLI arguments for the recipe (e.g. ["--model.backbone.init_args.depth", "2"]).
    train: false probes the recipe's seeded random initialisation (a baseline; no training cost).
    control: also compare the recipe's random initialisation, as ``<name>-random``.
    search: where the layer search looks, {option: [values]} (default: the objective's own
        `feature_options`, e.g. every depth, and for a diffusion model three noise levels too).
    features: a folder of precomputed features (train/val/test.safetensors, as this command saves them
        under <output>/features/<model>/chosen) to probe instead of a model; no search, no physics.
    """

    name: str
    recipe: str | None = None
    checkpoint: str | None = None
    overrides: list[str] = field(default_factory=list)
    train: bool = True
    control: bool = True
    search: dict[str, list] | None = None
    features: str | None = None


@dataclass
class Baseline:
    """A feature source without training: `pixels` (raw tubelets of `patch_size`) or `random_init`
    (the recipe's network at its seeded random initialisation)."""

    name: str
    kind: Literal["pixels", "random_init"] = "pixels"
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    patch_size: tuple[int, int, int] = (2, 8, 8)


class PixelFeatures(nn.Module):
    """The raw-pixel baseline: non-overlapping tubelets of the clip as tokens, no parameters."""

    def __init__(self, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = tuple(patch_size)

    def fit_frames(self, frames: int) -> int:
        return frames - frames % self.patch_size[0]

    def surprise(self, video: torch.Tensor, context: int) -> torch.Tensor:
        """Copy-last-frame prediction (B, T): each step of `patch_size[0]` frames after a `context`-frame
        window is predicted to look like the window's last frame; squared error (NaN before `context`)."""
        B, T, step = video.shape[0], video.shape[2], self.patch_size[0]
        curve = torch.full((B, T), float("nan"), device=video.device)
        for start in range(context, T - step + 1, step):
            error = (video[:, :, start : start + step] - video[:, :, start - 1 : start]).float().pow(2)
            curve[:, start : start + step] = error.mean(dim=(1, 2, 3, 4))[:, None]
        return curve

    def features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # video (B, 3, T, H, W) -> tokens (B, N, 3*pt*ph*pw), positions (B, N, 3)
        grid = tuple(n // p for n, p in zip(video.shape[2:], self.patch_size))
        crop = video[:, :, : grid[0] * self.patch_size[0], : grid[1] * self.patch_size[1], : grid[2] * self.patch_size[2]]
        tokens = patchify(crop, self.patch_size)
        return tokens, grid_positions(*grid, device=video.device).expand(video.shape[0], -1, -1)


def fit_frames(model, frames: int, height: int, width: int) -> int:
    """The longest clip length <= `frames` that `model` accepts at (height, width)."""
    if isinstance(model, PixelFeatures):
        return model.fit_frames(frames)
    patch = model.backbone.patch_size if model.backbone is not None else (1, 1, 1)
    for t in range(frames, 0, -1):
        try:
            grid = model.tokenizer.latent_grid(t, height, width)
        except PatchworldError:
            continue
        if all(n % p == 0 and n >= p for n, p in zip(grid, patch)):
            return t
    raise PatchworldError(f"no clip of at most {frames} frames at {height}x{width} fits this model "
                          f"(tokenizer {type(model.tokenizer).__name__}, patch {patch}); change data.frames/size")


class Contestants:
    """Builds every entry of a study on its data, under `output`/models/<name>/ (training to `budget_flops`
    per model when given, else each recipe's max_steps). A trained model is saved there as last.ckpt with
    its stamp, last.json (`reuse`): a later study on the same output loads it instead of training again when
    its recipe, overrides, budget and data are the same (unless `fresh`)."""

    def __init__(self, data: DataSpec, output: Path, device: torch.device, budget_flops: float | None,
                 fresh: bool = False):
        self.data, self.output, self.device, self.budget_flops = data, Path(output), device, budget_flops
        self.fresh = fresh
        self.reused: set[str] = set()  # the models loaded from an earlier run instead of trained

    def identity(self, role: str, spec) -> dict:
        """What defines the network an entry gives (the inputs of every fingerprint of its work): the recipe
        (its file's text too) and overrides, and for a trained model its training data and budget; a loaded
        checkpoint's path, size and time; a pixel baseline's patch size."""
        if role == "baseline" and spec.kind == "pixels":
            return {"pixels": list(spec.patch_size)}
        if getattr(spec, "checkpoint", None):
            stat = Path(spec.checkpoint).stat()
            return {"checkpoint": str(spec.checkpoint), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "recipe": spec.recipe, "overrides": list(spec.overrides)}
        recipe_file = resolve_recipe_args(["--config", spec.recipe], load_plugins())[1] if spec.recipe else None
        network = {"recipe": spec.recipe, "recipe_text": file_text(recipe_file) if recipe_file else None,
                   "overrides": list(spec.overrides)}
        if role == "model" and spec.train:
            return network | {"data": training_data(self.data, self.data.frames), "budget_flops": self.budget_flops}
        return network | {"random_init": True}

    def _cli(self, recipe: str, overrides: list[str], frames: int, root: Path, steps: int | None):
        args = resolve_recipe_args(["--config", recipe], load_plugins()) + list(overrides) + [
            "--data", json.dumps(training_data(self.data, frames)),
            "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.max_time", "null", "--trainer.default_root_dir", str(root),
            "--trainer.accelerator", self.device.type,
        ]
        if steps is not None:
            args += ["--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            return PatchworldCLI(args=args, run=False)

    def build(self, recipe: str, overrides: list[str], root: Path, steps: int | None = None):
        """A recipe's CLI objects with the study's data, at the longest clip length the model accepts."""
        cli = self._cli(recipe, overrides, self.data.frames, root, steps)
        frames = fit_frames(cli.model, self.data.frames, *self.data.size)
        if frames != self.data.frames:
            cli = self._cli(recipe, overrides, frames, root, steps)
        return cli, frames

    def one_batch(self, cli) -> dict:
        cli.datamodule.setup("fit")
        return next(iter(cli.datamodule.train_dataloader()))

    def prepare_model(self, spec: ModelSpec, bar) -> tuple[Any, int, dict]:
        """(model, frames, cost) for one model spec: trained to the budget, loaded, or at random init."""
        from ..model import WorldModel

        root = self.output / "models" / spec.name
        if spec.checkpoint:
            bar.set_postfix_str(f"{spec.name}: loading {spec.checkpoint}")
            checkpoint = load_checkpoint(spec.checkpoint, f"models[{spec.name}].checkpoint")
            steps = int(checkpoint.get("global_step", 0))
            flops = None
            if spec.recipe:  # the recipe defines the model, the checkpoint its weights
                cli, _ = self.build(spec.recipe, spec.overrides, root)
                model = cli.model
                check_fits(model, checkpoint, spec.checkpoint, spec.recipe)
                model.load_state_dict(checkpoint["state_dict"])
                flops = train_step_flops(model, self.one_batch(cli))
            else:  # the checkpoint's own saved recipe (read safely above, so nothing in it runs code)
                model = WorldModel.load_from_checkpoint(spec.checkpoint, map_location="cpu", weights_only=True)
            frames = fit_frames(model, self.data.frames, *self.data.size)
            cost = {"source": "checkpoint", "flops_per_step": flops, "steps": steps,
                    "train_flops": flops * steps if flops else None, "wall_time_s": None, "peak_memory_mb": None}
            return model.to(self.device), frames, cost | {"parameters": count_parameters(model)}
        if not spec.recipe:
            raise ComponentError(f"models[{spec.name}] needs a recipe or a checkpoint")
        cli, frames = self.build(spec.recipe, spec.overrides, root)
        model = cli.model
        if not spec.train:
            return model.to(self.device), frames, {"source": "random_init", "flops_per_step": 0, "steps": 0,
                                                    "train_flops": 0, "wall_time_s": 0.0, "peak_memory_mb": None,
                                                    "parameters": count_parameters(model)}
        inputs, stamp, saved = self.identity("model", spec), root / "last.json", root / "last.ckpt"
        record = read_stamp(stamp, inputs, self.fresh)
        if record is not None and saved.exists():  # trained by an earlier run of this study: the same settings
            bar.set_postfix_str(f"{spec.name}: reusing {saved}")
            model.load_state_dict(load_checkpoint(saved, f"{spec.name}'s saved model")["state_dict"])
            self.reused.add(spec.name)
            return model.to(self.device), frames, record["cost"]
        again = ""
        if stamp.exists():  # cleared first: a run stopped while training again leaves no stale stamp behind
            why = "--fresh" if self.fresh else f"{saved} is missing" if record is not None else f"settings changed since {saved}"
            again = f" again ({why})"
            stamp.unlink()
        flops = train_step_flops(model, self.one_batch(cli))
        if self.budget_flops:
            steps = max(1, int(self.budget_flops // flops))
            cli, frames = self.build(spec.recipe, spec.overrides, root, steps)
            model = cli.model
        else:
            steps = int(cli.trainer.max_steps)
        bar.set_postfix_str(f"{spec.name}: training {steps} steps{again}")
        start = time.perf_counter()
        with PeakMemory(self.device) as memory:
            cli.trainer.fit(model, datamodule=cli.datamodule)
        wall = time.perf_counter() - start
        with atomic_path(saved) as tmp:
            cli.trainer.save_checkpoint(tmp)
        cost = {"source": "trained", "recipe": spec.recipe, "flops_per_step": flops, "steps": steps,
                "train_flops": flops * steps, "wall_time_s": wall, "peak_memory_mb": memory.peak_mb,
                "parameters": count_parameters(model), "checkpoint": str(saved)}
        write_stamp(stamp, inputs, cost=cost)
        return model, frames, cost

    def prepare(self, role: str, spec, bar) -> tuple[Any, int, dict]:
        """(model, frames, cost) for any entry: a pixel baseline, an untrained network, or a model."""
        if role == "baseline" and spec.kind == "pixels":
            pixels = PixelFeatures(spec.patch_size)
            return pixels, pixels.fit_frames(self.data.frames), {
                "source": "pixels", "flops_per_step": 0, "steps": 0, "train_flops": 0, "wall_time_s": 0.0,
                "peak_memory_mb": None, "parameters": 0}
        if role == "baseline":
            spec = ModelSpec(spec.name, recipe=spec.recipe, overrides=spec.overrides, train=False)
        return self.prepare_model(spec, bar)


def entries(models: list[ModelSpec], baselines: list[Baseline]) -> list[tuple[str, Any]]:
    """(role, spec) in order: each model, then its random-init control, then the baselines."""
    out = []
    for m in models:
        out.append(("model", m))
        if m.control and m.train and not m.features:
            out.append(("control", ModelSpec(f"{m.name}-random", recipe=m.recipe, overrides=m.overrides,
                                             train=False, search=m.search)))
    return out + [("baseline", b) for b in baselines]
