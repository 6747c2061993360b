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

Each trained model, feature set (with its layer search), physics curve set and the ceilings are saved under
the output with a stamp of their inputs (`reuse`), so a study run again on the same output reuses whatever
an earlier run finished with the same settings. A model that fails is named in one line and recorded as
failed; the others go on. The wall time is reported split into its parts (`WallTime`).

The clips live in `clips`, the contestants (trained, loaded, controls, baselines) in `contestants`, the
command in `compare` and the outputs in `report`.
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..parsing import describe
from ..data.synthetic import TASKS
from ..errors import ComponentError, PatchworldError
from ..precision import autocast_bf16
from .ceiling import CeilingResult, CeilingSpec, supervised_ceiling
from .clips import DataSpec, ProbeClips
from .contestants import Baseline, Contestants, ModelSpec, PixelFeatures, entries
from .features import FeatureSet, extract_features, load_features, save_features
from .physics import PhysicsRun, PhysicsSpec, ranked_pairs
from .probes import PROBES, probe_inputs, probe_sweep
from .reuse import read_stamp, write_stamp
from .statistics import accuracy_estimate, gap_closed, label, paired_difference

SPLITS = ("train", "val", "test")
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


class WallTime:
    """The study's wall time split into its parts (the rest: everything else, e.g. building and loading models,
    differences, bootstraps); work reused from an earlier run counts 0 s and is listed under its part."""

    PARTS = ("training", "features", "probes", "physics", "ceilings")

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.reused: dict[str, list[str]] = {part: [] for part in self.PARTS}

    def add(self, part: str, since: float, reused: str | None = None) -> None:
        """Count the time from `since` until now as `part`, or, when it was `reused` (a name), none of it."""
        if reused is not None:
            self.reused[part].append(reused)
        else:
            self.seconds[part] += time.perf_counter() - since

    def as_dict(self) -> dict:
        """{"total_s", "parts": {part: {"seconds", "share" of the total, "reused": [names]}}}, the rest last."""
        total = time.perf_counter() - self.start
        seconds = self.seconds | {"rest": total - sum(self.seconds.values())}
        return {"total_s": total, "parts": {part: {"seconds": s, "share": s / total, "reused": self.reused.get(part, [])}
                                            for part, s in seconds.items()}}


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
                 ceiling: CeilingSpec | None = None, keep_unlearnable: list[str] | None = None, fresh: bool = False,
                 fail_fast: bool = False):
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
        self.contestants = Contestants(data, self.output, self.device, budget_flops, fresh)
        self.fresh, self.fail_fast = fresh, fail_fast
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
        for split in SPLITS:
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
    def measure_ceilings(self) -> bool:
        """Every task's supervised ceiling on the probe clips (reused from `output`/ceilings.json when an earlier
        run measured them on the same data, tasks and ceiling settings: returns True then); refuses a task whose
        ceiling is not clearly above chance (unless kept: then it is probed and reported, but no family average
        includes it)."""
        if self.ceiling_spec is None or not self.reads_clips:
            return False
        stamp = self.output / "ceilings.json"
        inputs = {"data": self.probe_data(), "ceiling": asdict(self.ceiling_spec), "tasks": self.tasks}
        record = read_stamp(stamp, inputs, self.fresh)
        if record is not None:
            self.ceilings = {task: CeilingResult(**c | {"test_correct": torch.tensor(c["test_correct"], dtype=torch.bool)})
                             for task, c in record["ceilings"].items()}
        else:
            clips = [self.probe_clips(split) for split in SPLITS]
            with tqdm(total=self.ceiling_spec.steps, desc="compare [supervised ceilings]", unit="step",
                      disable=not self.progress) as bar:  # closed before a refusal, so the error has its own line
                self.ceilings = supervised_ceiling(*clips, self.tasks, self.ceiling_spec,
                                                   progress=lambda step: bar.update(step - bar.n))
            write_stamp(stamp, inputs, ceilings={task: asdict(c) | {"test_correct": c.test_correct.int().tolist()}
                                                 for task, c in self.ceilings.items()})
        self.refuse_unlearnable()
        return record is not None

    def refuse_unlearnable(self) -> None:
        """Stop at a task whose ceiling is at chance unless it is kept; leave kept ones out of the families."""
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

    # ---- work an earlier run on the same output already did ----------------------------------------------
    def probe_data(self) -> dict:
        """The data settings the probe clips depend on (not the models' training batch size or seed)."""
        return {key: value for key, value in asdict(self.data).items() if key not in ("batch_size", "seed")}

    def saved_features(self, role: str, spec, model, frames: int, bar) -> tuple[dict, dict, dict | None, bool]:
        """(chosen, default, search record, reused): `choose_features`, saved under `output`/features/<name>/
        with its stamp, or read back from there when an earlier run read the same network on the same clips
        with the same search and probe sweep (reused: True)."""
        folder = self.output / "features" / spec.name
        stamp = folder / "features.json"
        inputs = {"model": self.contestants.identity(role, spec), "data": self.probe_data(), "frames": frames,
                  "search": getattr(spec, "search", None), "tasks": self.tasks, "extract_batch_size": self.extract_batch_size,
                  "probe": {k: getattr(self.probe, k) for k in ("lrs", "weight_decays", "steps", "batch_size")},
                  "bf16": self.bf16, "device": self.device.type}
        files = {which: {split: folder / which / f"{split}.safetensors" for split in SPLITS} for which in ("chosen", "default")}
        record = read_stamp(stamp, inputs, self.fresh)
        if record is not None and all(f.exists() for paths in files.values() for f in paths.values()):
            bar.set_postfix_str(f"reusing {folder}")
            chosen = {split: load_features(f) for split, f in files["chosen"].items()}
            default = chosen if record["chosen_is_default"] else {split: load_features(f) for split, f in files["default"].items()}
            return chosen, default, record["search"], True
        stamp.unlink(missing_ok=True)
        chosen, default, search = self.choose_features(model, frames, spec, bar)
        for which, feats in (("chosen", chosen), ("default", default)):
            for split, f in feats.items():
                save_features(f, files[which][split])
        write_stamp(stamp, inputs, search=search, chosen_is_default=chosen is default)
        return chosen, default, search, False

    def saved_physics(self, role: str, spec, model, bar) -> bool:
        """Score a model's predictive surprise on the matched sets, its curves kept in `output`/physics/<name>.json,
        or read back from there when an earlier run scored the same network on the same sets (then True)."""
        stamp = self.output / "physics" / f"{spec.name}.json"
        inputs = {"model": self.contestants.identity(role, spec), "physics": asdict(self.physics_spec),
                  "bf16": self.bf16, "device": self.device.type}
        record = read_stamp(stamp, inputs, self.fresh)
        if record is not None:
            self.physics.add_curves(spec.name, [torch.tensor(curve) for curve in record["curves"]])
            return True
        stamp.unlink(missing_ok=True)
        self.physics.add(spec.name, model.to(self.device) if hasattr(model, "to") else model, bar)
        if spec.name in self.physics.curves:  # a model without a predictive surprise has none to keep
            write_stamp(stamp, inputs, curves=[curve.tolist() for curve in self.physics.curves[spec.name]])
        return False

    # ---- the whole study --------------------------------------------------------------------------------
    def run(self) -> dict:
        """Ceilings, then every entry; a model that fails is named in one line (`failed` in its entry) and the
        study goes on without it (unless `fail_fast`). When every entry fails there is nothing to report: the
        first failure is raised."""
        clock = WallTime()
        torch.manual_seed(0)
        start = time.perf_counter()  # first: a task nobody can learn stops the study before any training
        clock.add("ceilings", start, "every task" if self.measure_ceilings() else None)
        bar = tqdm(self.entries(), desc="compare", unit="model", disable=not self.progress)
        results: dict = {"config": None, "families": self.families, "models": {}}
        controls: dict[str, str] = {}
        errors: list[Exception] = []
        for role, spec in bar:
            bar.set_description(f"compare [{spec.name}]")
            if role == "control":
                controls[spec.name[: -len("-random")]] = spec.name
            try:
                results["models"][spec.name] = self.run_entry(role, spec, bar, clock)
            except Exception as error:
                if self.fail_fast:
                    raise
                errors.append(error)
                results["models"][spec.name] = {"role": role, "failed": self.failure(spec.name, error)}
        if errors and len(errors) == len(results["models"]):
            raise errors[0]
        results["differences"] = self.differences(controls)
        results["ceilings"] = {task: c.as_dict() for task, c in self.ceilings.items()}
        results["gap_closed"] = self.gaps_closed(controls)
        start = time.perf_counter()
        if self._physics is not None:
            results["physics"] = self._physics.results(ranked_pairs(self._physics, controls))
        clock.add("physics", start)
        results["wall_time"] = clock.as_dict()
        results["wall_time_s"] = results["wall_time"]["total_s"]
        return results

    def run_entry(self, role: str, spec, bar, clock: WallTime) -> dict:
        """One entry's results: its model (trained, loaded or built), features, probes and physics surprise."""
        entry: dict = {"role": role}
        started = time.perf_counter()
        if getattr(spec, "features", None):  # precomputed: probes only
            feats = {split: load_features(Path(spec.features) / f"{split}.safetensors") for split in SPLITS}
            chosen = default = feats
            entry["cost"], search, model = {"source": "features", "parameters": None}, None, None
            clock.add("features", started)
        else:
            model, frames, entry["cost"] = self.contestants.prepare(role, spec, bar)
            if entry["cost"]["source"] == "trained":
                clock.add("training", started, spec.name if spec.name in self.contestants.reused else None)
            entry["frames"] = frames
            start = time.perf_counter()
            chosen, default, search, reused = self.saved_features(role, spec, model, frames, bar)
            clock.add("features", start, spec.name if reused else None)
        entry["feature_search"] = search
        start = time.perf_counter()
        entry["probes"], correct = self.probes(chosen, bar)
        entry["families"] = self.summarise(entry["probes"], correct)
        if chosen is not default:  # the fixed default reading too, at the largest label fraction
            entry["probes_default"], correct_default = self.probes(default, bar, fractions=[max(self.probe.fractions)])
            entry["families_default"] = self.summarise(entry["probes_default"], correct_default)
        clock.add("probes", start)
        start = time.perf_counter()
        if model is not None and self.physics is not None:
            bar.set_postfix_str("physics")
            clock.add("physics", start, spec.name if self.saved_physics(role, spec, model, bar) else None)
        self.correct[spec.name] = correct  # last: a model that fails leaves nothing in the differences
        entry["eval_time_s"] = time.perf_counter() - started
        return entry

    def failure(self, name: str, error: Exception) -> str:
        """The one line naming a failed model and its cause (the CLI's), printed as it happens."""
        line = f"{name} failed: {describe(error)}"
        tqdm.write(f"patchworld: compare: {line}", file=sys.stderr)
        return line

    def entries(self) -> list[tuple[str, Any]]:
        """(role, spec) in order: each model, then its random-init control, then the baselines."""
        return entries(self.models, self.baselines)
