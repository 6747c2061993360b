"""The study behind ``patchworld compare``: frozen probes, physics surprise and cost of every contestant.

First, every task's **ceiling**: a small CNN trained supervised on the probe clips' labels
(`patchworld.evaluation.ceiling`); a task whose ceiling is not clearly above chance is refused (one line)
unless listed under `keep_unlearnable`, and is then reported but left out of every family average. Then, for
every model of a study config (trained here from a recipe to a matched FLOP budget, or loaded from a
checkpoint) and every baseline (raw pixels, a random-init network):

1. **cost**: training FLOPs per step (`cost.flop_counter`, attention included, on one forward+backward),
   steps, wall time, parameters and peak memory;
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

Every trained model is joined by its random-init control (the same recipe, untrained), its *floor*: each
model's **gap closed** per task and family is (model - floor) / (ceiling - floor), with a paired bootstrap
interval over test clips (`statistics.gap_closed`). It writes
report.md, results.json and plots (compare-*.png, physics-*.png) atomically under the output directory.

The clips live in `clips`, the contestants (trained, loaded, controls, baselines) in `contestants`, the
command in `compare` and the outputs in `report`.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.synthetic import TASKS
from ..errors import ComponentError, PatchworldError
from ..precision import autocast_bf16
from .ceiling import CeilingResult, CeilingSpec, supervised_ceiling
from .clips import DataSpec, ProbeClips
from .contestants import Baseline, Contestants, ModelSpec, PixelFeatures, entries
from .features import FeatureSet, extract_features, load_features, save_features
from .physics import PhysicsRun, PhysicsSpec, ranked_pairs
from .probes import PROBES, probe_inputs, probe_sweep
from .statistics import accuracy_estimate, gap_closed, label, paired_difference

FAMILIES: dict[str, list[str]] = {
    "appearance": ["shape", "colour"],
    "motion": ["direction", "speed", "reversed"],
    "physics": ["bounced", "collided", "count"],
}


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
                 probe_threads: int | None = None, physics: PhysicsSpec | None = None,
                 ceiling: CeilingSpec | None = None, keep_unlearnable: list[str] | None = None):
        self.models, self.baselines, self.data, self.probe = models, baselines, data, probe
        self.output = Path(output)
        self.families = tasks or ({"label": ["label"]} if data.folder else FAMILIES)
        self.tasks = [task for family in self.families.values() for task in family]
        self.reads_clips = bool(baselines) or any(not m.features for m in models)  # else: precomputed features only
        if not data.folder and self.reads_clips:  # SyntheticWorld's labels
            unknown = sorted(set(self.tasks) - set(TASKS))
            if unknown:
                raise ComponentError(f"compare: unknown task(s) {unknown} under tasks; SyntheticWorld tasks: {', '.join(TASKS)}")
        names = [m.name for m in models] + [f"{m.name}-random" for m in models if m.control and m.train and not m.features]
        names += [b.name for b in baselines]
        if len(set(names)) != len(names):
            raise ComponentError(f"compare: model and baseline names must be unique, got {names}")
        self.extract_batch_size, self.bf16, self.device = extract_batch_size, bf16, torch.device(device)
        self.progress, self.probe_threads = progress, probe_threads
        self.probe_clips = ProbeClips(data, extract_batch_size)
        self.contestants = Contestants(data, self.output, self.device, budget_flops)
        # matched sets need SyntheticWorld clips, or your own under physics.folder
        self.physics_spec = physics if physics is not None and (not data.folder or physics.folder) else None
        self._physics: PhysicsRun | None = None
        self.correct: dict[str, dict] = {}  # name -> {probe: {fraction: {task: (seeds, N) bool}}}
        unknown = sorted(set(keep_unlearnable or []) - set(self.tasks))
        if unknown:
            raise ComponentError(f"compare: keep_unlearnable names {unknown}, not tasks of this study: {', '.join(self.tasks)}")
        self.ceiling_spec, self.keep_unlearnable = ceiling, list(keep_unlearnable or [])
        self.ceilings: dict[str, CeilingResult] = {}

    @property
    def physics(self) -> PhysicsRun | None:
        """The physics scoring (its matched sets rendered on first use), or None for a study without it."""
        if self._physics is None and self.physics_spec is not None:
            self._physics = PhysicsRun(self.physics_spec, self.bf16, self.device.type)
        return self._physics

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

    # ---- ceilings and gap closed -------------------------------------------------------------------------
    def measure_ceilings(self) -> None:
        """Every task's supervised ceiling on the probe clips; refuses a task whose ceiling is not clearly above
        chance (unless kept: then it is probed and reported, but no family average includes it)."""
        if self.ceiling_spec is None or not self.reads_clips:
            return
        clips = [self.probe_clips(split) for split in ("train", "val", "test")]
        with tqdm(total=self.ceiling_spec.steps, desc="compare [supervised ceilings]", unit="step",
                  disable=not self.progress) as bar:  # closed before a refusal, so the error has its own line
            self.ceilings = supervised_ceiling(*clips, self.tasks, self.ceiling_spec, progress=lambda step: bar.update(step - bar.n))
        unlearnable = [t for t, c in self.ceilings.items() if not c.learnable]
        refused = [t for t in unlearnable if t not in self.keep_unlearnable]
        if refused:
            told = ", ".join(f"{t} {self.ceilings[t].test_accuracy:.2f} [{self.ceilings[t].estimate.low:.2f}, "
                             f"{self.ceilings[t].estimate.high:.2f}] vs chance {self.ceilings[t].chance:.2f}" for t in refused)
            raise ComponentError(f"compare: no better than chance even supervised at these data settings: {told}; change "
                                 "data (object_scale, friction, frames, size, probe_train), drop the task from tasks, or "
                                 "list it under keep_unlearnable")
        self.families = {family: kept for family, tasks in self.families.items()
                         if (kept := [t for t in tasks if t not in unlearnable])}
        if not self.families:
            raise ComponentError(f"compare: no task is learnable at these data settings ({', '.join(unlearnable)} all at "
                                 "chance even supervised): nothing left to average; change data or tasks")

    def gaps_closed(self, controls: dict[str, str]) -> dict:
        """{model: {probe: {task or family: gap closed with its interval, or None}}} at the largest label
        fraction, for every model with a random-init control (its floor), against the supervised ceiling."""
        if not self.ceilings:
            return {}
        top = str(max(self.probe.fractions))
        ceiling = {task: c.test_correct for task, c in self.ceilings.items()}
        ceiling |= {family: torch.stack([ceiling[t].float() for t in tasks]).mean(0) for family, tasks in self.families.items()}
        out: dict = {}
        for model, control in controls.items():
            if model not in self.correct or control not in self.correct:
                continue
            out[model] = {}
            for kind in PROBES:
                estimates = {key: gap_closed(self.per_clip(model, kind, top, key), self.per_clip(control, kind, top, key),
                                             ceiling[key])
                             for key in [*self.families, *self.tasks]}
                out[model][kind] = {key: e.as_dict() if e is not None else None for key, e in estimates.items()}
        return out

    def per_clip(self, name: str, kind: str, fraction: str, key: str) -> torch.Tensor:
        """(seeds, N) correctness of a model's probe on a task, or the share of a family's tasks it gets right."""
        if key in self.families:
            return self.family_correct(self.correct[name], kind, fraction, key)
        return self.correct[name][kind][fraction][key]

    # ---- the whole study --------------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        torch.manual_seed(0)
        self.measure_ceilings()  # first: a task nobody can learn stops the study before any training
        bar = tqdm(self.entries(), desc="compare", unit="model", disable=not self.progress)
        results: dict = {"config": None, "families": self.families, "models": {}}
        controls: dict[str, str] = {}
        for role, spec in bar:
            bar.set_description(f"compare [{spec.name}]")
            entry: dict = {"role": role}
            started = time.perf_counter()
            if getattr(spec, "features", None):  # precomputed: probes only
                feats = {split: load_features(Path(spec.features) / f"{split}.safetensors") for split in ("train", "val", "test")}
                chosen = default = feats
                entry["cost"], search, model = {"source": "features", "parameters": None}, None, None
            else:
                model, frames, entry["cost"] = self.contestants.prepare(role, spec, bar)
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
        results["ceilings"] = {task: c.as_dict() for task, c in self.ceilings.items()}
        results["gap_closed"] = self.gaps_closed(controls)
        if self._physics is not None:
            results["physics"] = self._physics.results(ranked_pairs(self._physics, controls))
        results["wall_time_s"] = time.perf_counter() - start
        return results

    def entries(self) -> list[tuple[str, Any]]:
        """(role, spec) in order: each model, then its random-init control, then the baselines."""
        return entries(self.models, self.baselines)
