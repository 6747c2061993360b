"""``patchworld compare``: the JEPA comparison — frozen probes, physics surprise and cost, in one command.

For every model of a study config (trained here from a recipe to a matched FLOP budget, or loaded from a
checkpoint) and every baseline (raw pixels, a random-init network):

1. **cost**: training FLOPs per step (torch.utils.flop_counter on one forward+backward), steps, wall time,
   parameters and peak memory;
2. **features**: every model's layer (and, for a generative model, noise level) is chosen by the same
   search on the validation split (`Objective.feature_options`, a linear probe over all tasks); each
   point's features are extracted once, and the chosen and the fixed default ones are kept for every
   probe run (float16 tokens) and saved under ``<output>/features/<model>/`` (a model can be given
   precomputed features instead: `models[i].features`);
3. **probes**: the same attentive and linear probes with the same (lr, weight decay) sweep for every model,
   chosen on validation, scored on test, over several seeds and label fractions, with bootstrap 95%
   intervals over test clips; the differences the report prints are paired bootstraps on the same clips,
   labelled resolved or within noise;
4. **physics**: each model's own predictive surprise on matched possible/impossible sets
   (`patchworld.evaluation.physics`, the code behind ``patchworld physics``).

Every trained model is joined by its random-init control (the same recipe, untrained). It writes
report.md, results.json and plots (compare-*.png, physics-*.png) atomically under the output directory.

    patchworld compare --config recipes/compare-tiny.yaml
    patchworld compare --config recipes/compare-tiny.yaml --output runs/my-study --probe.seeds 5
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import check_fits, load_checkpoint
from .compare_report import write_outputs
from .cost import PeakMemory, count_parameters, train_step_flops
from .data.synthetic import TASKS, collate
from .data.video_io import check_writable
from .errors import ComponentError, DataError, PatchworldError
from .evaluation.physics import PhysicsRun, PhysicsSpec, as_spec, ranked_pairs, write_physics
from .evaluation.statistics import accuracy_estimate, label, paired_difference
from .patches import grid_positions, patchify
from .precision import autocast_bf16
from .probes import PROBES, FeatureSet, extract_features, load_features, probe_inputs, probe_sweep, save_features

FAMILIES: dict[str, list[str]] = {
    "appearance": ["shape", "colour"],
    "motion": ["direction", "speed", "reversed"],
    "physics": ["bounced", "collided", "count"],
}


# ---- the study config ---------------------------------------------------------------------------------
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
class DataSpec:
    """The clips every model trains on and is probed on (SyntheticWorld), or your own labelled videos.

    frames / size: clip shape; a model that cannot take `frames` frames (e.g. a causal VAE needs 1 + 2k)
        gets the longest prefix it can.
    batch_size: training batch size for every model.
    probe_train / probe_val / probe_test: clips of each probe split (SyntheticWorld's train/val/test splits
        with `probe_seed`, disjoint from the training clips).
    object_scale: SyntheticWorld's object size factor, the same for every model (a recipe's own is overridden).
    folder: a VideoFolder root with one sub-folder per class: models train on its training files and the
        probes predict the sub-folder label (task "label"); its held-out files are split in two for
        validation and test (physics then needs `physics.folder`: matched sets of your own).
    """

    frames: int = 8
    size: tuple[int, int] = (32, 32)
    batch_size: int = 16
    max_objects: int = 3
    gravity_prob: float = 0.3
    reverse_prob: float = 0.5
    object_scale: float = 1.0
    seed: int = 0
    probe_seed: int = 1
    probe_train: int = 256
    probe_val: int = 128
    probe_test: int = 256
    folder: str | None = None
    folder_val_fraction: float = 0.4


@dataclass
class ProbeSpec:
    """The probe protocol, the same for every model."""

    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    weight_decays: list[float] = field(default_factory=lambda: [1e-4, 1e-1])
    steps: int = 200
    heads: int = 4
    batch_size: int = 512
    seeds: int = 3
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.25, 1.0])


@dataclass
class Baseline:
    """A feature source without training: `pixels` (raw tubelets of `patch_size`) or `random_init`
    (the recipe's network at its seeded random initialisation)."""

    name: str
    kind: Literal["pixels", "random_init"] = "pixels"
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    patch_size: tuple[int, int, int] = (2, 8, 8)


# ---- small helpers ---------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run a block with `threads` intra-op threads (None: unchanged). A linear probe's tiny ops gain
    nothing from threads, an attentive probe over many tokens gains ~1.8x from 2 (on a busy CPU, 1 can
    be faster: `--probe_threads 1`)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "values": values}


# ---- the study ---------------------------------------------------------------------------------------------
class Study:
    """Runs one comparison; `run()` returns the results dict and writes the outputs."""

    def __init__(self, models: list[ModelSpec], baselines: list[Baseline], data: DataSpec, probe: ProbeSpec,
                 budget_flops: float | None, output: Path, tasks: dict[str, list[str]] | None = None,
                 extract_batch_size: int = 64, bf16: bool = True, device: str = "cpu", progress: bool = True,
                 probe_threads: int | None = None, physics: PhysicsSpec | None = None):
        self.models, self.baselines, self.data, self.probe = models, baselines, data, probe
        self.budget_flops, self.output = budget_flops, Path(output)
        self.families = tasks or ({"label": ["label"]} if data.folder else FAMILIES)
        self.tasks = [task for family in self.families.values() for task in family]
        if not data.folder and (baselines or any(not m.features for m in models)):  # SyntheticWorld's labels
            unknown = sorted(set(self.tasks) - set(TASKS))
            if unknown:
                raise ComponentError(f"compare: unknown task(s) {unknown} under tasks; SyntheticWorld tasks: {', '.join(TASKS)}")
        names = [m.name for m in models] + [f"{m.name}-random" for m in models if m.control and m.train and not m.features]
        names += [b.name for b in baselines]
        if len(set(names)) != len(names):
            raise ComponentError(f"compare: model and baseline names must be unique, got {names}")
        self.extract_batch_size, self.bf16, self.device = extract_batch_size, bf16, torch.device(device)
        self.progress, self.probe_threads = progress, probe_threads
        self._clips: dict[str, list[dict]] = {}
        # matched sets need SyntheticWorld clips, or your own under physics.folder
        self.physics_spec = physics if physics is not None and (not data.folder or physics.folder) else None
        self._physics: PhysicsRun | None = None
        self.correct: dict[str, dict] = {}  # name -> {probe: {fraction: {task: (seeds, N) bool}}}

    @property
    def physics(self) -> PhysicsRun | None:
        """The physics scoring (its matched sets rendered on first use), or None for a study without it."""
        if self._physics is None and self.physics_spec is not None:
            self._physics = PhysicsRun(self.physics_spec, self.bf16, self.device.type)
        return self._physics

    # ---- data -----------------------------------------------------------------------------------------
    def data_config(self, frames: int) -> dict:
        """The datamodule every model trains on, as a recipe's ``data`` entry."""
        d = self.data
        if d.folder:
            return {"class_path": "VideoFolder", "init_args": {
                "root": d.folder, "frames": frames, "size": list(d.size), "batch_size": d.batch_size,
                "val_fraction": d.folder_val_fraction}}
        return {"class_path": "SyntheticWorld", "init_args": {
            "frames": frames, "size": list(d.size), "batch_size": d.batch_size, "max_objects": d.max_objects,
            "gravity_prob": d.gravity_prob, "reverse_prob": d.reverse_prob, "object_scale": d.object_scale,
            "seed": d.seed, "val_size": 16,
            "test_size": 16, "train_size": 1_000_000}}

    def probe_clips(self, split: str) -> list[dict]:
        """Batches of the probe split ("train", "val" or "test"), rendered once and kept."""
        if split not in self._clips:
            d = self.data
            if d.folder:
                self._clips = self.folder_probe_clips()
            else:
                from .data.synthetic import SyntheticWorld

                world = SyntheticWorld(frames=d.frames, size=tuple(d.size), batch_size=self.extract_batch_size,
                                       train_size=d.probe_train, val_size=d.probe_val, test_size=d.probe_test,
                                       max_objects=d.max_objects, gravity_prob=d.gravity_prob,
                                       reverse_prob=d.reverse_prob, object_scale=d.object_scale,
                                       seed=d.probe_seed)
                for name in ("train", "val", "test"):
                    loader = torch.utils.data.DataLoader(world.splits[name], batch_size=self.extract_batch_size,
                                                         collate_fn=collate)
                    self._clips[name] = list(loader)
        return self._clips[split]

    def folder_probe_clips(self) -> dict[str, list[dict]]:
        """Probe splits from a VideoFolder: its training files, and its held-out files alternately to
        validation and test (so the sweep is never selected on the clips it is scored on); every clip
        starts in the middle of its video, so every model sees the same clips."""
        from torch.utils.data import DataLoader

        from .data.video_folder import VideoFolder, collate as folder_collate

        d = self.data
        folder = VideoFolder(d.folder, frames=d.frames, size=tuple(d.size), val_fraction=d.folder_val_fraction)
        folder.setup("fit")
        train, held = folder.splits["train"].videos, folder.splits["val"].videos
        if len(held) < 2 or {v.path for v in train} & {v.path for v in held}:
            raise DataError(f"compare: {d.folder} has {len(train) + len(held)} readable videos, too few to hold out "
                            f"separate validation and test files at folder_val_fraction={d.folder_val_fraction}; "
                            "add videos or raise data.folder_val_fraction")
        splits = {"train": train, "val": held[0::2], "test": held[1::2]}
        return {name: list(DataLoader(folder.clips(videos), batch_size=self.extract_batch_size, collate_fn=folder_collate))
                for name, videos in splits.items()}

    # ---- models --------------------------------------------------------------------------------------------
    def _cli(self, recipe: str, overrides: list[str], frames: int, root: Path, steps: int | None):
        from .cli import PatchworldCLI, resolve_recipe_args
        from .plugins import load_plugins

        args = resolve_recipe_args(["--config", recipe], load_plugins()) + list(overrides) + [
            "--data", json.dumps(self.data_config(frames)),
            "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.max_time", "null", "--trainer.default_root_dir", str(root),
            "--trainer.accelerator", self.device.type,
        ]
        if steps is not None:
            args += ["--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1"]
        import warnings

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
        from .model import WorldModel

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
        flops = train_step_flops(model, self.one_batch(cli))
        if self.budget_flops:
            steps = max(1, int(self.budget_flops // flops))
            cli, frames = self.build(spec.recipe, spec.overrides, root, steps)
            model = cli.model
        else:
            steps = int(cli.trainer.max_steps)
        bar.set_postfix_str(f"{spec.name}: training {steps} steps")
        start = time.perf_counter()
        with PeakMemory(self.device) as memory:
            cli.trainer.fit(model, datamodule=cli.datamodule)
        wall = time.perf_counter() - start
        cli.trainer.save_checkpoint(root / "last.ckpt")
        return model, frames, {"source": "trained", "recipe": spec.recipe, "flops_per_step": flops, "steps": steps,
                               "train_flops": flops * steps, "wall_time_s": wall, "peak_memory_mb": memory.peak_mb,
                               "parameters": count_parameters(model), "checkpoint": str(root / "last.ckpt")}

    # ---- features and probes --------------------------------------------------------------------
    def features(self, model, frames: int, where: dict, keep_tokens: bool = True) -> dict[str, FeatureSet]:
        """Features of the three probe splits read at `where` (float16 tokens kept for the attentive probe)."""
        dtype = torch.bfloat16 if autocast_bf16(self.bf16, self.device) else None
        out = {}
        for split in ("train", "val", "test"):
            batches = ({**b, "video": b["video"][:, :, :frames]} for b in self.probe_clips(split))
            feats = extract_features(model, batches, keep_tokens=keep_tokens, autocast_dtype=dtype, device=self.device,
                                     where=where)
            if keep_tokens and feats.tokens is None:
                raise PatchworldError("compare: clips of one split gave different token counts; use one clip size")
            if feats.tokens is not None:
                feats.tokens = feats.tokens.half()
            out[split] = feats
        return out

    def search_grid(self, model, spec) -> list[dict]:
        """Every point the layer search tries: the product of the objective's `feature_options` (or the
        spec's `search`)."""
        if isinstance(model, PixelFeatures):
            return []
        options = getattr(spec, "search", None) or model.objective.feature_options(model)
        unknown = sorted(set(options) - set(model.objective.feature_options(model)))
        if unknown:
            raise ComponentError(f"models[{spec.name}].search: {type(model.objective).__name__} has no feature option "
                                 f"{unknown}; its options: {', '.join(model.objective.feature_options(model)) or 'none'}")
        points = [{}]
        for key, values in options.items():
            points = [p | {key: v} for p in points for v in values]
        return points if points != [{}] else []

    def search_score(self, feats: dict[str, FeatureSet], bar) -> float:
        """The search's criterion: mean validation accuracy over all tasks of the linear probe (100% labels,
        seed 0, the same sweep); validation only."""
        result = self.probes(feats, bar, fractions=[1.0], seeds=1, kinds=("linear",))[0]["linear"]["1.0"]
        return statistics.fmean(result[t]["val"] for t in self.tasks)

    def choose_features(self, model, frames: int, spec, bar) -> tuple[dict, dict, dict | None]:
        """(chosen features, default features, search record): every point of the grid is extracted once and
        scored on validation; the default (the objective's own reading) is always kept and reported."""
        bar.set_postfix_str("features at the default reading")
        default = self.features(model, frames, {})
        grid = self.search_grid(model, spec)
        if not grid:
            return default, default, None
        default_score = self.search_score(default, bar)
        record, best, best_score = [], None, default_score
        for where in grid:
            bar.set_postfix_str(f"layer search {where}")
            feats = self.features(model, frames, where)
            score = self.search_score(feats, bar)
            record.append(where | {"val_accuracy": score})
            if score > best_score:  # strictly better than the default (and than every earlier point)
                best, best_score, chosen = where, score, feats
        search = {"grid": record, "default_val_accuracy": default_score, "chosen": best if best is not None else "default"}
        return (chosen if best is not None else default), default, search

    def probes(self, feats: dict[str, FeatureSet], bar, fractions=None, seeds=None,
               kinds=PROBES) -> tuple[dict, dict]:
        """({probe: {fraction: {task: test accuracy over seeds, its 95% interval, the chosen sweep points}}},
        {probe: {fraction: {task: (seeds, N) bool per test clip}}})."""
        p = self.probe
        results: dict = {}
        correct: dict = {}
        for kind in kinds:
            train, val, test = probe_inputs(kind, feats["train"], feats["val"], feats["test"])
            per_fraction, correct[kind] = {}, {}
            for fraction in fractions or p.fractions:
                runs = []
                for seed in range(seeds or p.seeds):
                    bar.set_postfix_str(f"{kind} probe, {fraction:.0%} labels, seed {seed}")
                    with torch_threads(self.probe_threads):
                        runs.append(probe_sweep(kind, train, val, test, self.tasks, p.lrs, p.weight_decays, p.steps,
                                                seed, fraction, p.heads, p.batch_size))
                verdicts = {task: torch.stack([r[task].test_correct for r in runs]) for task in self.tasks}
                correct[kind][str(fraction)] = verdicts
                per_fraction[str(fraction)] = {
                    task: mean_std([r[task].test_accuracy for r in runs])
                    | {"ci": accuracy_estimate(verdicts[task]).as_dict(),
                       "val": statistics.fmean(r[task].val_accuracy for r in runs),
                       "chance": runs[0][task].chance,
                       "chosen": [{"lr": r[task].lr, "weight_decay": r[task].weight_decay} for r in runs]}
                    for task in self.tasks}
            results[kind] = per_fraction
        return results, correct

    def family_correct(self, correct: dict, kind: str, fraction: str, family: str) -> torch.Tensor:
        """(seeds, N) float: per test clip, the fraction of a family's tasks the probe gets right."""
        return torch.stack([correct[kind][fraction][t].float() for t in self.families[family]]).mean(0)

    def summarise(self, probes: dict, correct: dict) -> dict:
        """Mean test accuracy per family at each fraction, per probe, with its 95% interval over test clips."""
        return {kind: {fraction: {family: {"mean": statistics.fmean(per_task[t]["mean"] for t in tasks),
                                           "ci": accuracy_estimate(self.family_correct(correct, kind, fraction, family)).as_dict()}
                                  for family, tasks in self.families.items()}
                       for fraction, per_task in per_fraction.items()}
                for kind, per_fraction in probes.items()}

    def differences(self, controls: dict[str, str]) -> dict:
        """{probe: {family: [a - b ...]}} at the largest label fraction: each model against its random-init
        control and against the next one down, paired bootstrap over the shared test clips, labelled."""
        top = str(max(self.probe.fractions))
        out: dict = {}
        for kind in PROBES:
            out[kind] = {}
            for family in self.families:
                per_clip = {name: self.family_correct(c, kind, top, family) for name, c in self.correct.items()}
                order = sorted(per_clip, key=lambda n: -float(per_clip[n].mean()))
                pairs = [(m, c) for m, c in controls.items() if m in per_clip and c in per_clip]
                pairs += [(a, b) for a, b in zip(order, order[1:]) if (a, b) not in pairs and (b, a) not in pairs]
                out[kind][family] = []
                for a, b in pairs:
                    estimate = paired_difference(per_clip[a], per_clip[b])
                    out[kind][family].append({"a": a, "b": b, **estimate.as_dict(), "label": label(estimate)})
        return out

    # ---- the whole study --------------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        torch.manual_seed(0)
        results: dict = {"config": None, "families": self.families, "models": {}}
        controls: dict[str, str] = {}
        bar = tqdm(self.entries(), desc="compare", unit="model", disable=not self.progress)
        for role, spec in bar:
            bar.set_description(f"compare [{spec.name}]")
            entry: dict = {"role": role}
            started = time.perf_counter()
            if getattr(spec, "features", None):  # precomputed: probes only
                feats = {split: load_features(Path(spec.features) / f"{split}.safetensors") for split in ("train", "val", "test")}
                chosen = default = feats
                entry["cost"], search, model = {"source": "features", "parameters": None}, None, None
            else:
                model, frames, entry["cost"] = self.prepare(role, spec, bar)
                entry["frames"] = frames
                chosen, default, search = self.choose_features(model, frames, spec, bar)
                for which, feats in (("chosen", chosen), ("default", default)):
                    for split, f in feats.items():
                        save_features(f, self.output / "features" / spec.name / which / f"{split}.safetensors")
            if role == "control":
                controls[spec.name[: -len("-random")]] = spec.name
            entry["feature_search"] = search
            entry["probes"], self.correct[spec.name] = self.probes(chosen, bar)
            entry["families"] = self.summarise(entry["probes"], self.correct[spec.name])
            if chosen is not default:  # the fixed default reading too, at the largest label fraction
                entry["probes_default"], correct = self.probes(default, bar, fractions=[max(self.probe.fractions)])
                entry["families_default"] = self.summarise(entry["probes_default"], correct)
            if model is not None and self.physics is not None:
                bar.set_postfix_str("physics")
                self.physics.add(spec.name, model.to(self.device) if hasattr(model, "to") else model, bar)
            entry["eval_time_s"] = time.perf_counter() - started
            results["models"][spec.name] = entry
            del model
        results["differences"] = self.differences(controls)
        if self._physics is not None:
            results["physics"] = self._physics.results(ranked_pairs(self._physics, controls))
        results["wall_time_s"] = time.perf_counter() - start
        return results

    def entries(self) -> list[tuple[str, Any]]:
        """(role, spec) in order: each model, then its random-init control, then the baselines."""
        out = []
        for m in self.models:
            out.append(("model", m))
            if m.control and m.train and not m.features:
                out.append(("control", ModelSpec(f"{m.name}-random", recipe=m.recipe, overrides=m.overrides,
                                                 train=False, search=m.search)))
        return out + [("baseline", b) for b in self.baselines]

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


# ---- the command ----------------------------------------------------------------------------------------------
def parser():
    from jsonargparse import ActionConfigFile

    from .cli import CommandParser

    p = CommandParser(prog="patchworld compare", description=(__doc__ or "").split("\n\n")[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="a study config (e.g. recipes/compare-tiny.yaml)")
    p.add_argument("--name", type=str, default="study", help="the study's title in the report")
    p.add_argument("--output", type=str, default="runs/compare", help="where report.md, results.json and plots go")
    p.add_argument("--models", type=list[ModelSpec], default=[], help="models to train (or load) and compare")
    p.add_argument("--baselines", type=list[Baseline], default=[], help="untrained feature sources")
    p.add_argument("--data", type=DataSpec, default=DataSpec(), help="clips for training and probes")
    p.add_argument("--probe", type=ProbeSpec, default=ProbeSpec(), help="the probe protocol")
    p.add_argument("--physics", type=PhysicsSpec, default=PhysicsSpec(),
                   help="matched physics sets and their scoring (as for patchworld physics)")
    p.add_argument("--tasks", type=dict[str, list[str]] | None, default=None,
                   help="task families {family: [task, ...]} (default appearance/motion/physics)")
    p.add_argument("--budget_flops", type=float | None, default=None,
                   help="training FLOPs per model (steps = budget / FLOPs per step); null = each recipe's max_steps")
    p.add_argument("--extract_batch_size", type=int, default=64, help="clips per batch for features and surprise")
    p.add_argument("--bf16", type=bool, default=True, help="bf16 autocast for feature extraction")
    p.add_argument("--device", type=str, default="cpu", help="cpu or cuda")
    p.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    p.add_argument("--threads", type=int | None, default=None,
                   help="torch intra-op threads for training, features and surprise (default: torch's choice)")
    p.add_argument("--probe_threads", type=int | None, default=None,
                   help="threads while training probes (default: torch's choice)")
    return p


def parse_study(argv: list[str]):
    """(parsed namespace with instantiated specs, the config as a plain dict) of a study's arguments."""
    from .cli import resolve_recipe_args
    from .plugins import load_plugins

    p = parser()
    cfg = p.parse_args(resolve_recipe_args(argv, load_plugins()))  # --config may name a shipped study
    import yaml

    config = yaml.safe_load(p.dump(cfg, skip_none=False))
    init = p.instantiate_classes(cfg)
    if not init.models and not init.baselines:
        raise PatchworldError("compare: the config lists no models and no baselines (keys: models, baselines)")
    return init, config


def compare_command(argv: list[str]) -> int:
    """Compare world models' frozen features (probes), physics surprise and cost; writes report.md."""
    init, config = parse_study(argv)
    check_writable(Path(init.output) / "report.md")  # now, not after an hour of training
    results = run_study(init, config)
    print(f"wrote {Path(init.output) / 'report.md'} ({results['wall_time_s'] / 60:.1f} min)")
    return 0


def make_study(init) -> Study:
    import logging

    for name in ("pytorch_lightning", "lightning_fabric"):  # one model after another: no per-model banners
        logging.getLogger(name).setLevel(logging.WARNING)
    if init.threads:
        torch.set_num_threads(init.threads)
    return Study([_as(ModelSpec, m) for m in init.models], [_as(Baseline, b) for b in init.baselines],
                 _as(DataSpec, init.data), _as(ProbeSpec, init.probe), init.budget_flops, Path(init.output),
                 init.tasks, init.extract_batch_size, init.bf16, init.device, init.progress, init.probe_threads,
                 as_spec(init.physics))


def run_study(init, config: dict | None = None) -> dict:
    """Run a parsed study config (the namespace `parser()` gives) and write its outputs."""
    study = make_study(init)
    results = study.run()
    results = {"name": init.name, "config": config, "families": study.families,
               "fractions": [str(f) for f in study.probe.fractions], "seeds": study.probe.seeds,
               "sweep": {"lr": study.probe.lrs, "weight_decay": study.probe.weight_decays},
               "budget_flops": init.budget_flops, "wall_time_s": results["wall_time_s"], "models": results["models"],
               "differences": results["differences"], "physics": results.get("physics")}
    write_outputs(results, Path(init.output))
    return results


def study_physics_command(argv: list[str]) -> int:
    """``patchworld physics`` on a study: every model (its checkpoint, the one `compare` saved under the
    study's output, or trained now to the budget), its random-init control and the baselines."""
    if any(a.split("=")[0] == "--ckpt_path" for a in argv):
        raise PatchworldError("physics: --ckpt_path is for a recipe; a study's models name their own checkpoints "
                              "(models[i].checkpoint), or reuse the ones `patchworld compare` saved")
    init, _ = parse_study(argv)
    study = make_study(init)
    if study.physics is None:
        raise PatchworldError("physics: this study trains on your own videos; give physics.folder with matched sets")
    output = Path(init.output)
    check_writable(output / "physics.md")
    controls = {}
    bar = tqdm(study.entries(), desc="physics", unit="model", disable=not init.progress)
    for role, spec in bar:
        bar.set_description(f"physics [{spec.name}]")
        if getattr(spec, "features", None):
            continue
        saved = output / "models" / spec.name / "last.ckpt"
        if role == "model" and spec.train and not spec.checkpoint and saved.exists():
            spec = ModelSpec(**(vars(spec) | {"checkpoint": str(saved)}))
        model, _, _ = study.prepare(role, spec, bar)
        study.physics.add(spec.name, model, bar)
        if role == "control":
            controls[spec.name[: -len("-random")]] = spec.name
    write_physics(study.physics.results(ranked_pairs(study.physics, controls)), output, init.name)
    print(f"wrote {output / 'physics.md'}")
    return 0


def _as(cls, value):
    """A dataclass instance from what jsonargparse gives (an instance or a namespace/dict)."""
    if isinstance(value, cls):
        return value
    return cls(**(value.as_dict() if hasattr(value, "as_dict") else dict(value)))
