"""Intuitive physics the field's way (Garrido et al. 2025): each model's own *predictive* surprise on matched
sets of possible and impossible clips.

A model scores a clip by sliding a `context`-frame window over it and predicting each next step in its own
space (`Objective.future_error`: V-JEPA's predictor against its target encoder, VideoMAE's reconstruction of
the future tubelets, a diffusion model's extend-forward denoising error, copy-last-frame for raw pixels),
which gives a surprise curve over time; a clip's score is the curve's max (or mean) after the context.
Matched sets (`patchworld.data.matched`) show every frame equally often in possible and impossible clips, so
only the *order* of events can tell them apart. Scores are relative: within each set the impossible clips
should be the more surprising ones (relative accuracy, 0.5 = chance), plus the AUROC over all clips, both with
bootstrap 95% confidence intervals over sets.

    patchworld physics --config vjepa-tiny --ckpt_path last          # one model and its random-init control
    patchworld physics --config compare-tiny                         # every model of a study (+ controls)
    patchworld physics --config vjepa-tiny --ckpt_path last --physics.folder my_sets/   # your own matched clips
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.matched import MATCHED_VIOLATIONS, MatchedSet, matched_sets, read_matched_folder
from ..data.video_io import atomic_path
from ..errors import ComponentError, PatchworldError
from ..precision import autocast_bf16
from .statistics import label, physics_difference, physics_estimates


@dataclass
class PhysicsSpec:
    """The matched sets and how they are scored, the same for every model.

    violations: which SyntheticWorld matched sets to render (permanence, continuity, shape, colour,
        solidity, gravity).
    sets: sets per violation (each set: 2 possible + 2 impossible clips).
    frames / size: clip shape of the rendered sets.
    context: frames each prediction sees; the first prediction is of the frames right after it.
    score: a clip's score, the surprise curve's `max` or `mean` after the context.
    seed: the sets' seed (disjoint from training and probe data).
    folder: your own matched sets instead (root/<violation>/<set>/{possible,impossible}/*.mp4).
    resamples: bootstrap resamples for the confidence intervals.
    batch_size: clips per forward pass.
    """

    violations: list[str] = field(default_factory=lambda: list(MATCHED_VIOLATIONS))
    sets: int = 16
    frames: int = 16
    size: tuple[int, int] = (32, 32)
    context: int = 4
    score: Literal["max", "mean"] = "max"
    seed: int = 7
    folder: str | None = None
    resamples: int = 2000
    batch_size: int = 32


def load_sets(spec: PhysicsSpec) -> list[MatchedSet]:
    """The matched sets of a spec: rendered by SyntheticWorld, or read from `spec.folder`."""
    if spec.score not in ("max", "mean"):
        raise ComponentError(f"physics.score {spec.score!r}; valid: max, mean")
    if spec.folder:
        return read_matched_folder(spec.folder, size=tuple(spec.size))
    unknown = sorted(set(spec.violations) - set(MATCHED_VIOLATIONS))
    if unknown:
        raise ComponentError(f"physics.violations: unknown {unknown}; valid: {', '.join(MATCHED_VIOLATIONS)}")
    return matched_sets(tuple(spec.violations), spec.sets, spec.frames, tuple(spec.size), spec.seed)


def has_surprise(model) -> bool:
    """Whether `model` defines a predictive surprise (a pixel baseline or an objective with future_error)."""
    objective = getattr(model, "objective", None)
    if objective is None:
        return hasattr(model, "surprise")
    from ..interfaces import Objective

    return type(objective).future_error is not Objective.future_error


@torch.no_grad()
def surprise_curves(model, sets: list[MatchedSet], context: int, batch_size: int = 32, bf16: bool = True,
                    device: str | torch.device = "cpu", bar=None) -> list[torch.Tensor]:
    """Each set's surprise curves (K, T) float32 (NaN before the context)."""
    device = torch.device(device)
    autocast = (torch.autocast(device.type, torch.bfloat16) if autocast_bf16(bf16, device)
                else contextlib.nullcontext())
    if hasattr(model, "eval"):
        model.eval()
    videos = [s.videos for s in sets]
    sizes = {tuple(v.shape[1:]) for v in videos}
    flat = torch.cat(videos) if len(sizes) == 1 else None
    curves: list[torch.Tensor] = []
    if flat is not None:  # one clip shape: batch across sets
        out = []
        for start in range(0, len(flat), batch_size):
            if bar is not None:
                bar.set_postfix_str(f"surprise {start}/{len(flat)} clips")
            with autocast:
                out.append(model.surprise(flat[start : start + batch_size].to(device), context).float().cpu())
        scores = torch.cat(out)
        index = 0
        for v in videos:
            curves.append(scores[index : index + len(v)])
            index += len(v)
        return curves
    for v in videos:  # user sets of different shapes: one set at a time
        with autocast:
            curves.append(model.surprise(v.to(device), context).float().cpu())
    return curves


def clip_scores(curve: torch.Tensor, how: str) -> torch.Tensor:
    """(K, T) curve with NaN before the context -> (K,) score: its max or mean over the predicted frames."""
    valid = ~curve.isnan()
    if not bool(valid.any(1).all()):
        raise PatchworldError("physics: a clip has no predicted frame after the context; use longer clips or a shorter context")
    if how == "max":
        return curve.nan_to_num(float("-inf")).max(1).values
    return curve.nan_to_num(0.0).sum(1) / valid.sum(1)


def score_model(curves: list[torch.Tensor], sets: list[MatchedSet], spec: PhysicsSpec) -> dict:
    """{violation | "overall": {"max" | "mean": {relative_accuracy, auroc as estimate dicts}, "sets": count}}
    for one model's curves over the sets (both clip scores; `spec.score` is the one the report leads with)."""
    results: dict = {}
    groups = {v: [i for i, s in enumerate(sets) if s.violation == v] for v in dict.fromkeys(s.violation for s in sets)}
    groups["overall"] = list(range(len(sets)))
    other = "mean" if spec.score == "max" else "max"
    for name, members in groups.items():
        entry = {}
        for how in (spec.score, other):
            scores, impossible = stack_sets([clip_scores(curves[i], how) for i in members], [sets[i] for i in members])
            estimates = physics_estimates(scores, impossible, resamples=spec.resamples)
            entry[how] = {k: e.as_dict() for k, e in estimates.items()}
        results[name] = entry | {"sets": len(members)}
    return results


def stack_sets(scores: list[torch.Tensor], sets: list[MatchedSet]) -> tuple[np.ndarray, np.ndarray]:
    """Per-set scores and impossible flags as (S, K) arrays; every set of a group must have K clips."""
    sizes = {len(s) for s in scores}
    if len(sizes) != 1:
        raise PatchworldError(f"physics: matched sets of different sizes ({sorted(sizes)} clips) in one group; "
                              "give every set the same number of possible and impossible clips")
    return (torch.stack(scores).numpy().astype(np.float64), torch.stack([s.impossible for s in sets]).numpy())


def differences(per_model: dict[str, list[torch.Tensor]], sets: list[MatchedSet], spec: PhysicsSpec,
                pairs: list[tuple[str, str]]) -> list[dict]:
    """Overall relative-accuracy differences a - b for each pair, paired bootstrap over sets, labelled."""
    out = []
    for a, b in pairs:
        sa, impossible = stack_sets([clip_scores(c, spec.score) for c in per_model[a]], sets)
        sb, _ = stack_sets([clip_scores(c, spec.score) for c in per_model[b]], sets)
        estimate = physics_difference(sa, sb, impossible, resamples=spec.resamples)
        out.append({"a": a, "b": b, **estimate.as_dict(), "label": label(estimate)})
    return out


def example_curves(curves: list[torch.Tensor], sets: list[MatchedSet]) -> dict:
    """The first set of each violation: its curves per clip and which are impossible, for the plots."""
    out = {}
    for i, s in enumerate(sets):
        if s.violation not in out:
            out[s.violation] = {"set": s.name, "event_frame": s.event_frame,
                                "impossible": s.impossible.tolist(),
                                "curves": [[None if math.isnan(x) else x for x in row] for row in curves[i].tolist()]}
    return out


# ---- outputs -------------------------------------------------------------------------------------------
def fmt(estimate: dict) -> str:
    """0.712 [0.651, 0.770]"""
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def physics_markdown(physics: dict, spec: dict) -> list[str]:
    """Report lines: relative accuracy and AUROC per violation and overall, with CIs, and the differences."""
    models = {name: entry for name, entry in physics["models"].items() if entry.get("scores")}
    if not models:
        return []
    how = spec["score"]
    violations = [v for v in next(iter(models.values()))["scores"] if v != "overall"]
    lines = ["## Physics: predictive surprise on matched sets", "",
             f"Each model predicts every next step from the {spec['context']} frames before it in its own space; a "
             f"clip's score is the {how} of its surprise curve after the context. Within a set (2 possible + 2 "
             "impossible clips showing the same frames) the impossible clips should be more surprising: relative "
             "accuracy (0.5 = chance) and AUROC, with bootstrap 95% intervals over sets.", ""]
    for metric in ("relative_accuracy", "auroc"):
        lines += [f"**{metric.replace('_', ' ')}**", "", "| model | overall | " + " | ".join(violations) + " |",
                  "|---" * (2 + len(violations)) + "|"]
        for name, entry in models.items():
            cells = [fmt(entry["scores"][v][how][metric]) for v in ["overall", *violations]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if physics.get("differences"):
        lines += ["Differences in overall relative accuracy (paired bootstrap over sets):", "",
                  "| a | b | a - b | 95% CI | |", "|---|---|---|---|---|"]
        for d in physics["differences"]:
            lines.append(f"| {d['a']} | {d['b']} | {d['value']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {d['label']} |")
        lines.append("")
    skipped = [name for name, entry in physics["models"].items() if not entry.get("scores")]
    if skipped:
        lines += [f"No predictive surprise score (left out): {', '.join(skipped)}.", ""]
    return lines


def plot_curves(physics: dict, path: Path) -> None:
    """physics-curves.png: for one set per violation (columns) and each model (rows), the surprise curve of
    every clip over time, possible solid and impossible dashed, the event frame marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {name: e for name, e in physics["models"].items() if e.get("examples")}
    if not models:
        return
    violations = list(next(iter(models.values()))["examples"])
    fig, axes = plt.subplots(len(models), len(violations), figsize=(2.6 * len(violations), 1.9 * len(models)),
                             squeeze=False)
    for r, (name, entry) in enumerate(models.items()):
        for c, violation in enumerate(violations):
            ax, example = axes[r][c], entry["examples"][violation]
            for k, (curve, impossible) in enumerate(zip(example["curves"], example["impossible"])):
                y = np.array([np.nan if v is None else v for v in curve])
                ax.plot(np.arange(len(y)), y, "--" if impossible else "-", color="tab:red" if impossible else "tab:blue",
                        lw=1.2, label=("impossible" if impossible else "possible") if k in (0, 2) else None)
            if example["event_frame"] is not None:
                ax.axvline(example["event_frame"], color="grey", lw=0.8, ls=":")
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(violation, fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.supxlabel("frame (dotted: the event)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_accuracy(physics: dict, path: Path, how: str) -> None:
    """physics-accuracy.png: relative accuracy per violation with 95% intervals, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {name: e for name, e in physics["models"].items() if e.get("scores")}
    if not models:
        return
    groups = list(next(iter(models.values()))["scores"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(groups), 3.2))
    for i, (name, entry) in enumerate(models.items()):
        values = [entry["scores"][g][how]["relative_accuracy"] for g in groups]
        centre = np.array([v["value"] for v in values])
        err = np.array([[v["value"] - v["low"] for v in values], [v["high"] - v["value"] for v in values]])
        ax.bar(np.arange(len(groups)) + i * width, centre, width, yerr=err, capsize=2, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("relative accuracy")
    ax.set_title("impossible clips more surprising than their matched possible ones (0.5 = chance)", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_physics(physics: dict, output: Path, title: str) -> None:
    """physics.md, physics.json, physics-curves.png and physics-accuracy.png under `output`, atomically."""
    output.mkdir(parents=True, exist_ok=True)
    lines = [f"# patchworld physics — {title}", "", *physics_markdown(physics, physics["spec"])]
    lines += ["![surprise over time](physics-curves.png)", "", "![relative accuracy](physics-accuracy.png)", ""]
    with atomic_path(output / "physics.md") as tmp:
        tmp.write_text("\n".join(lines))
    with atomic_path(output / "physics.json") as tmp:
        tmp.write_text(json.dumps(physics, indent=1))
    plot_curves(physics, output / "physics-curves.png")
    plot_accuracy(physics, output / "physics-accuracy.png", physics["spec"]["score"])


class PhysicsRun:
    """Scores models on one spec's matched sets (rendered once) and collects the outputs."""

    def __init__(self, spec: PhysicsSpec, bf16: bool = True, device: str = "cpu"):
        self.spec, self.bf16, self.device = spec, bf16, device
        self.sets = load_sets(spec)
        self.curves: dict[str, list[torch.Tensor]] = {}
        self.models: dict[str, dict] = {}

    def add(self, name: str, model, bar=None) -> dict:
        """Score one model (a WorldModel or a pixel baseline); a model without surprise is recorded as such."""
        if not has_surprise(model):
            self.models[name] = {"scores": None, "reason": f"{type(model.objective).__name__} has no predictive surprise"}
            return self.models[name]
        return self.add_curves(name, surprise_curves(model, self.sets, self.spec.context, self.spec.batch_size,
                                                     self.bf16, self.device, bar))

    def add_curves(self, name: str, curves: list[torch.Tensor]) -> dict:
        """Score one model from its surprise curves on these sets (computed by `add`, or kept from earlier)."""
        self.curves[name] = curves
        self.models[name] = {"scores": score_model(curves, self.sets, self.spec),
                             "examples": example_curves(curves, self.sets)}
        return self.models[name]

    def results(self, pairs: list[tuple[str, str]]) -> dict:
        pairs = [(a, b) for a, b in pairs if a in self.curves and b in self.curves]
        return {"spec": vars(self.spec) | {"size": list(self.spec.size)}, "models": self.models,
                "differences": differences(self.curves, self.sets, self.spec, pairs)}


def ranked_pairs(run: PhysicsRun, controls: dict[str, str]) -> list[tuple[str, str]]:
    """The differences worth printing: each model against its random-init control, and each model against the
    next one down in overall relative accuracy."""
    scored = [n for n in run.models if run.models[n].get("scores")]
    order = sorted(scored, key=lambda n: -run.models[n]["scores"]["overall"][run.spec.score]["relative_accuracy"]["value"])
    pairs = [(m, c) for m, c in controls.items() if m in scored and c in scored]
    pairs += [(a, b) for a, b in zip(order, order[1:]) if (a, b) not in pairs and (b, a) not in pairs]
    return pairs


def as_spec(value) -> PhysicsSpec:
    """A PhysicsSpec from what jsonargparse gives (an instance, a namespace or a dict)."""
    if isinstance(value, PhysicsSpec):
        return value
    return PhysicsSpec(**(value.as_dict() if hasattr(value, "as_dict") else dict(value)))


# ---- the command ----------------------------------------------------------------------------------------
def parser():
    from jsonargparse import ActionConfigFile

    from ..parsing import CommandParser

    p = CommandParser(prog="patchworld physics", description=(__doc__ or "").split("\n\n")[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="a recipe (with --ckpt_path) or a study config")
    p.add_argument("--ckpt_path", type=str | None, default=None,
                   help="a recipe's checkpoint (a .ckpt, a run folder or 'last'); without it only the random init is scored")
    p.add_argument("--output", type=str | None, default=None, help="where physics.md/.json and plots go")
    p.add_argument("--physics", type=PhysicsSpec, default=PhysicsSpec(), help="the matched sets and their scoring")
    p.add_argument("--bf16", type=bool, default=True, help="bf16 autocast where the CPU has native bf16")
    p.add_argument("--device", type=str, default="cpu", help="cpu or cuda")
    p.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    return p


def physics_command(argv: list[str]) -> int:
    """Intuitive physics: each model's own predictive surprise on matched possible/impossible sets."""
    import yaml

    from ..recipes import resolve_recipe_args
    from ..plugins import load_plugins

    if {"-h", "--help"} & set(argv):
        parser().print_help()
        return 0
    argv = resolve_recipe_args(argv, load_plugins())
    config_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")), None)
    if config_path is None:
        raise PatchworldError("physics: give --config with a recipe (and --ckpt_path) or a study config")
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    if isinstance(raw, dict) and ("models" in raw or "baselines" in raw):
        from .compare import study_physics_command

        return study_physics_command(argv)
    return recipe_physics(argv, config_path)


def recipe_physics(argv: list[str], recipe: str) -> int:
    """One recipe: its checkpoint (if given) and its random-init control, plus copy-last-frame pixels."""
    from .contestants import PixelFeatures
    from ..recipes import load_world

    rest = [a for i, a in enumerate(argv) if a not in ("--config", "-c") and (i == 0 or argv[i - 1] not in ("--config", "-c"))]
    p = parser()
    cfg = p.parse_args(rest)
    spec = as_spec(cfg.physics)
    name = Path(recipe).stem
    output = Path(cfg.output or f"runs/physics-{name}")
    run = PhysicsRun(spec, cfg.bf16, cfg.device)
    control, _ = load_world(recipe)
    if not has_surprise(control):
        raise ComponentError(f"physics: {name}'s objective {type(control.objective).__name__} has no predictive "
                             "surprise score (it needs future_error); models with one: VJEPA, VideoMAE, Flow, DDPM")
    entries = [(f"{name} (random init)", control), ("pixels (copy last frame)", PixelFeatures((2, 8, 8)))]
    if cfg.ckpt_path:
        trained, _ = load_world(recipe, cfg.ckpt_path)
        entries.insert(0, (name, trained))
    bar = tqdm(entries, desc="physics", unit="model", disable=not cfg.progress)
    for label_, model in bar:
        bar.set_description(f"physics [{label_}]")
        run.add(label_, model.to(cfg.device) if hasattr(model, "to") else model, bar)
    controls = {name: f"{name} (random init)"} if cfg.ckpt_path else {}
    results = run.results(ranked_pairs(run, controls))
    write_physics(results, output, name)
    print(f"wrote {output / 'physics.md'}")
    return 0
