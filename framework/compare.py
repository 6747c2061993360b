"""``patchworld compare``: the JEPA comparison — frozen probes, physics surprise and cost, in one command.

For every model of a study config (trained here from a recipe to a matched FLOP budget, or loaded from a
checkpoint) and every baseline (raw pixels, a random-init network):

1. **cost**: training FLOPs per step (torch.utils.flop_counter on one forward+backward), steps, wall time,
   parameters and peak memory;
2. **features**: each clip of the probe splits goes through the frozen model's own `features()` once and
   is kept in memory (float16 tokens); a generative objective's (layer, noise level) is chosen by a small
   search on the validation split and the fixed default is reported too;
3. **probes**: the same attentive and linear probes with the same (lr, weight decay) sweep for every model,
   chosen on validation, scored on test, over several seeds and label fractions;
4. **surprise**: AUROC of the model's own `surprise()` separating impossible clips from their possible
   twins, per violation type.

It writes report.md, results.json and plots (compare-*.png) atomically under the output directory.

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

from .data.synthetic import TASKS, VIOLATIONS, collate, render
from .data.video_io import check_writable
from .precision import autocast_bf16
from .checkpoints import check_fits, load_checkpoint
from .compare_report import write_outputs
from .cost import PeakMemory, count_parameters, train_step_flops
from .errors import ComponentError, DataError, PatchworldError
from .patches import grid_positions, patchify
from .probes import PROBES, FeatureSet, auroc, extract_features, probe_inputs, probe_sweep

FAMILIES: dict[str, list[str]] = {
    "appearance": ["shape", "colour"],
    "motion": ["direction", "speed", "reversed"],
    "physics": ["bounced", "collided", "count"],
}


# ---- the study config ---------------------------------------------------------------------------------
@dataclass
class FeatureSearch:
    """Grid for a generative objective's features: `depth` (DiT blocks) x `timestep` (noise level)."""

    depth: list[int] = field(default_factory=lambda: [2, 4])
    timestep: list[float] = field(default_factory=lambda: [0.1, 0.5])


@dataclass
class ModelSpec:
    """One model of the study.

    name: its label in tables and plots.
    recipe: the recipe it is trained from (a path or a shipped recipe name).
    checkpoint: a patchworld .ckpt to load instead of training (the recipe is then optional).
    overrides: extra CLI arguments for the recipe (e.g. ["--model.backbone.init_args.depth", "2"]).
    train: false probes the recipe's seeded random initialisation (a baseline; no training cost).
    search: (depth, timestep) grid searched on validation for objectives with `feature_depth` and
        `feature_timestep` (DiT + Flow/DDPM); the objective's own default is reported too.
    """

    name: str
    recipe: str | None = None
    checkpoint: str | None = None
    overrides: list[str] = field(default_factory=list)
    train: bool = True
    search: FeatureSearch | None = None


@dataclass
class DataSpec:
    """The clips every model trains on and is probed on (SyntheticWorld), or your own labelled videos.

    frames / size: clip shape; a model that cannot take `frames` frames (e.g. a causal VAE needs 1 + 2k)
        gets the longest prefix it can.
    batch_size: training batch size for every model.
    probe_train / probe_val / probe_test: clips of each probe split (SyntheticWorld's train/val/test splits
        with `probe_seed`, disjoint from the training clips).
    surprise_pairs: impossible/possible twin pairs per violation type.
    object_scale: SyntheticWorld's object size factor, the same for every model (a recipe's own is overridden).
    folder: a VideoFolder root with one sub-folder per class: models train on its training files and the
        probes predict the sub-folder label (task "label"); its held-out files are split in two for
        validation and test; no surprise (it needs twins).
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
    surprise_pairs: int = 32
    violations: list[str] = field(default_factory=lambda: list(VIOLATIONS[1:]))
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
                 probe_threads: int | None = None):
        self.models, self.baselines, self.data, self.probe = models, baselines, data, probe
        self.budget_flops, self.output = budget_flops, Path(output)
        self.families = tasks or ({"label": ["label"]} if data.folder else FAMILIES)
        self.tasks = [task for family in self.families.values() for task in family]
        if not data.folder:
            unknown = sorted(set(self.tasks) - set(TASKS))
            if unknown:
                raise ComponentError(f"compare: unknown task(s) {unknown} under tasks; SyntheticWorld tasks: {', '.join(TASKS)}")
        unknown = sorted(set(data.violations) - set(VIOLATIONS[1:]))
        if unknown:
            raise ComponentError(f"compare: unknown violation(s) {unknown} under data.violations; valid: {', '.join(VIOLATIONS[1:])}")
        names = [m.name for m in models] + [b.name for b in baselines]
        if len(set(names)) != len(names):
            raise ComponentError(f"compare: model and baseline names must be unique, got {names}")
        self.extract_batch_size, self.bf16, self.device = extract_batch_size, bf16, torch.device(device)
        self.progress, self.probe_threads = progress, probe_threads
        self._clips: dict[str, list[dict]] = {}

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

    def surprise_pairs(self, violation: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(impossible, possible) clips (P, 3, T, H, W): twins rendered from the same random state."""
        d = self.data
        impossible, possible = [], []
        code = VIOLATIONS.index(violation)
        for i in range(d.surprise_pairs):
            seed = [d.probe_seed, 99, code, i]
            kwargs = dict(frames=d.frames, height=d.size[0], width=d.size[1], max_objects=d.max_objects,
                          gravity_prob=d.gravity_prob, reverse_prob=0.0, object_scale=d.object_scale)
            impossible.append(render(np.random.default_rng(seed), violation=violation, **kwargs)["video"])
            possible.append(render(np.random.default_rng(seed), violation="none",
                                   collision_course=violation == "pass_through", **kwargs)["video"])
        return torch.stack(impossible), torch.stack(possible)

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

    # ---- features, probes, surprise ---------------------------------------------------------------
    def features(self, model, frames: int) -> dict[str, FeatureSet]:
        """Features of the three probe splits (float16 tokens kept for the attentive probe)."""
        dtype = torch.bfloat16 if autocast_bf16(self.bf16, self.device) else None
        out = {}
        for split in ("train", "val", "test"):
            batches = ({**b, "video": b["video"][:, :, :frames]} for b in self.probe_clips(split))
            feats = extract_features(model, batches, keep_tokens=True, autocast_dtype=dtype, device=self.device)
            if feats.tokens is None:
                raise PatchworldError("compare: clips of one split gave different token counts; use one clip size")
            feats.tokens = feats.tokens.half()
            out[split] = feats
        return out

    def probes(self, feats: dict[str, FeatureSet], bar, fractions=None, seeds=None, kinds=PROBES) -> dict:
        """{probe: {fraction: {task: mean_std of test accuracy over seeds}}} plus the chosen sweep points."""
        p = self.probe
        results: dict = {}
        for kind in kinds:
            train, val, test = probe_inputs(kind, feats["train"], feats["val"], feats["test"])
            per_fraction = {}
            for fraction in fractions or p.fractions:
                runs = []
                for seed in range(seeds or p.seeds):
                    bar.set_postfix_str(f"{kind} probe, {fraction:.0%} labels, seed {seed}")
                    with torch_threads(self.probe_threads):
                        runs.append(probe_sweep(kind, train, val, test, self.tasks, p.lrs, p.weight_decays, p.steps,
                                                seed, fraction, p.heads, p.batch_size))
                per_fraction[str(fraction)] = {
                    task: mean_std([r[task].test_accuracy for r in runs])
                    | {"val": statistics.fmean(r[task].val_accuracy for r in runs),
                       "chance": runs[0][task].chance,
                       "chosen": [{"lr": r[task].lr, "weight_decay": r[task].weight_decay} for r in runs]}
                    for task in self.tasks}
            results[kind] = per_fraction
        return results

    def feature_search(self, model, frames: int, search: FeatureSearch, bar) -> dict:
        """Pick the (depth, timestep) of a generative objective's features by mean validation accuracy of
        the linear probe (100% labels, seed 0, the same sweep) over all tasks."""
        objective = model.objective
        if not all(hasattr(objective, a) for a in ("feature_depth", "feature_timestep")):
            raise ComponentError(f"compare: search needs an objective with feature_depth and feature_timestep "
                                 f"(e.g. Flow, DDPM); {type(objective).__name__} has neither")
        default = {"depth": objective.feature_depth, "timestep": objective.feature_timestep}
        grid = []
        for depth in search.depth:
            for timestep in search.timestep:
                objective.feature_depth, objective.feature_timestep = depth, timestep
                bar.set_postfix_str(f"feature search depth={depth} t={timestep}")
                feats = self.features(model, frames)
                result = self.probes(feats, bar, fractions=[1.0], seeds=1, kinds=("linear",))["linear"]["1.0"]
                grid.append({"depth": depth, "timestep": timestep,
                             "val_accuracy": statistics.fmean(result[t]["val"] for t in self.tasks)})
        best = max(grid, key=lambda g: g["val_accuracy"])  # validation only
        objective.feature_depth, objective.feature_timestep = default["depth"], default["timestep"]
        return {"grid": grid, "chosen": {"depth": best["depth"], "timestep": best["timestep"]}, "default": default}

    @torch.no_grad()
    def surprise(self, model, frames: int, bar) -> dict | None:
        """{violation: {auroc, pair_accuracy, impossible, possible}} from the model's own surprise()."""
        if self.data.folder or not hasattr(model, "surprise"):
            return None
        out = {}
        model.eval()
        for violation in self.data.violations:
            bar.set_postfix_str(f"surprise: {violation}")
            impossible, possible = self.surprise_pairs(violation)
            scores = []
            try:
                for clips in (impossible, possible):
                    scores.append(torch.cat([model.surprise(clips[i : i + self.extract_batch_size, :, :frames].to(self.device)).float().cpu()
                                             for i in range(0, len(clips), self.extract_batch_size)]))
            except NotImplementedError:
                return None
            labels = torch.cat([torch.ones(len(scores[0])), torch.zeros(len(scores[1]))])
            out[violation] = {"auroc": auroc(torch.cat(scores), labels),
                              "pair_accuracy": float((scores[0] > scores[1]).float().mean()),
                              "impossible_mean": float(scores[0].mean()), "possible_mean": float(scores[1].mean())}
        return out

    def summarise(self, probes: dict) -> dict:
        """Mean test accuracy per family at each fraction, per probe."""
        return {kind: {fraction: {family: statistics.fmean(per_task[t]["mean"] for t in tasks)
                                  for family, tasks in self.families.items()}
                       for fraction, per_task in per_fraction.items()}
                for kind, per_fraction in probes.items()}

    # ---- the whole study --------------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        torch.manual_seed(0)
        entries = [("model", m) for m in self.models] + [("baseline", b) for b in self.baselines]
        results: dict = {"config": None, "families": self.families, "models": {}}
        bar = tqdm(entries, desc="compare", unit="model", disable=not self.progress)
        for role, spec in bar:
            bar.set_description(f"compare [{spec.name}]")
            entry: dict = {"role": role}
            if role == "baseline" and spec.kind == "pixels":
                model, frames = PixelFeatures(spec.patch_size), PixelFeatures(spec.patch_size).fit_frames(self.data.frames)
                entry["cost"] = {"source": "pixels", "flops_per_step": 0, "steps": 0, "train_flops": 0,
                                 "wall_time_s": 0.0, "peak_memory_mb": None, "parameters": 0}
            else:
                if role == "baseline":
                    spec = ModelSpec(spec.name, recipe=spec.recipe, overrides=spec.overrides, train=False)
                model, frames, entry["cost"] = self.prepare_model(spec, bar)
            entry["frames"] = frames
            started = time.perf_counter()
            if getattr(spec, "search", None) is not None:
                search = self.feature_search(model, frames, spec.search, bar)
                entry["feature_search"] = search
                entry["probes_default"] = self.probes(self.features(model, frames), bar)
                entry["families_default"] = self.summarise(entry["probes_default"])
                model.objective.feature_depth = search["chosen"]["depth"]
                model.objective.feature_timestep = search["chosen"]["timestep"]
            entry["probes"] = self.probes(self.features(model, frames), bar)
            entry["families"] = self.summarise(entry["probes"])
            entry["surprise"] = self.surprise(model, frames, bar) if not isinstance(model, PixelFeatures) else None
            entry["eval_time_s"] = time.perf_counter() - started
            results["models"][spec.name] = entry
            del model
        results["wall_time_s"] = time.perf_counter() - start
        return results


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
    p.add_argument("--data", type=DataSpec, default=DataSpec(), help="clips for training, probes and surprise")
    p.add_argument("--probe", type=ProbeSpec, default=ProbeSpec(), help="the probe protocol")
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


def compare_command(argv: list[str]) -> int:
    """Compare world models' frozen features (probes), physics surprise and cost; writes report.md."""
    from .cli import resolve_recipe_args
    from .plugins import load_plugins

    p = parser()
    cfg = p.parse_args(resolve_recipe_args(argv, load_plugins()))  # --config may name a shipped study
    import yaml

    config = yaml.safe_load(p.dump(cfg, skip_none=False))
    init = p.instantiate_classes(cfg)
    if not init.models and not init.baselines:
        raise PatchworldError("compare: the config lists no models and no baselines (keys: models, baselines)")
    check_writable(Path(init.output) / "report.md")  # now, not after an hour of training
    results = run_study(init, config)
    print(f"wrote {Path(init.output) / 'report.md'} ({results['wall_time_s'] / 60:.1f} min)")
    return 0


def run_study(init, config: dict | None = None) -> dict:
    """Run a parsed study config (the namespace `parser()` gives) and write its outputs."""
    if init.threads:
        torch.set_num_threads(init.threads)
    study = Study([_as(ModelSpec, m) for m in init.models], [_as(Baseline, b) for b in init.baselines],
                  _as(DataSpec, init.data), _as(ProbeSpec, init.probe), init.budget_flops, Path(init.output),
                  init.tasks, init.extract_batch_size, init.bf16, init.device, init.progress, init.probe_threads)
    results = study.run()
    results = {"name": init.name, "config": config, "families": study.families,
               "fractions": [str(f) for f in study.probe.fractions], "seeds": study.probe.seeds,
               "sweep": {"lr": study.probe.lrs, "weight_decay": study.probe.weight_decays},
               "violations": [] if study.data.folder else list(study.data.violations),
               "budget_flops": init.budget_flops, "wall_time_s": results["wall_time_s"], "models": results["models"]}
    write_outputs(results, Path(init.output))
    return results


def _as(cls, value):
    """A dataclass instance from what jsonargparse gives (an instance or a namespace/dict)."""
    if isinstance(value, cls):
        return value
    data = value.as_dict() if hasattr(value, "as_dict") else dict(value)
    if cls is ModelSpec and isinstance(data.get("search"), dict):
        data["search"] = FeatureSearch(**data["search"])
    return cls(**data)
