"""The outputs of `patchworld compare`: report.md, results.json and the compare-*.png plots, each written
atomically, from the results dictionary a study returns."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from ..data.video_io import atomic_path
from .probes import PROBES


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _si(value) -> str:
    if value is None:
        return "—"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _rows(results: dict, defaults: bool = True) -> list[tuple[str, dict, dict]]:
    """(row name, per-probe family summary, the model's entry) for every model that did not fail, plus
    `name@default` rows for models whose searched reading differs from their default one."""
    rows = []
    for name, entry in succeeded(results).items():
        rows.append((name, entry["families"], entry))
        if defaults and "families_default" in entry:
            rows.append((f"{name}@default", entry["families_default"], entry))
    return rows


def succeeded(results: dict) -> dict[str, dict]:
    """The entries of the models that did not fail."""
    return {name: entry for name, entry in results["models"].items() if "failed" not in entry}


def wall_time_markdown(results: dict) -> list[str]:
    """The study's wall time by part, each with its share of the total; reused work counts 0 s."""
    wall = results.get("wall_time")
    if not wall:
        return []
    lines = ["## Wall time", "", f"{wall['total_s'] / 60:.1f} min in all; work reused from an earlier run on this "
             "output counts 0 s (training: building, counting the FLOPs of, fitting and saving the models trained "
             "here; features: extraction and the layer search; physics: surprise curves and their bootstraps; the "
             "rest: building and loading the other models, differences, gap closed).", "",
             "| part | seconds | share | reused |", "|---|---|---|---|"]
    for part, cell in wall["parts"].items():
        lines.append(f"| {part} | {cell['seconds']:.1f} | {cell['share']:.0%} | {', '.join(cell['reused'])} |")
    return lines + [""]


def _ci(cell: dict) -> str:
    """0.612 [0.561, 0.664]: a test accuracy and its bootstrap 95% interval over test clips."""
    return f"{cell['mean']:.3f} [{cell['ci']['low']:.3f}, {cell['ci']['high']:.3f}]"


def _tasks(results: dict) -> list[str]:
    """Every probed task: the families' (learnable) ones, then any kept although not learnable."""
    tasks = [t for ts in results["families"].values() for t in ts]
    return tasks + [t for t in results.get("ceilings") or {} if t not in tasks]


def _gap(cell: dict | None) -> str:
    """+0.41 [+0.26, +0.55] resolved: a gap closed, its interval, and whether the interval excludes 0 (the floor)."""
    if cell is None:
        return "—"
    resolved = "resolved" if cell["low"] > 0 or cell["high"] < 0 else "within noise"
    return f"{cell['value']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}] {resolved}"


def ceiling_markdown(results: dict) -> list[str]:
    """Each task's chance and supervised ceiling, and each model's gap closed between its random-init
    control (floor, 0) and the ceiling (1), per probe, with intervals; which tasks are not learnable."""
    ceilings, gaps = results.get("ceilings") or {}, results.get("gap_closed") or {}
    if not ceilings:
        return []
    top = max(results["fractions"], key=float)
    lines = ["## Floors and ceilings", "",
             "Ceiling: a small CNN trained supervised on the probe clips' labels (the step chosen on validation), "
             "[bootstrap 95% interval over test clips]; a task whose interval does not clear chance is not learnable "
             "at these data settings and is in no family average. Gap closed = (model - floor) / (ceiling - floor), "
             f"the floor being the model's own random-init control ({float(top):.0%} labels, paired bootstrap over the "
             "same test clips; resolved where the interval excludes 0; — where the ceiling is not above the floor).", ""]
    unlearnable = [t for t, c in ceilings.items() if not c["learnable"]]
    if unlearnable:
        lines += [f"Not learnable here (kept on request): {', '.join(unlearnable)}.", ""]
    rows = [*results["families"], *_tasks(results)]
    for kind in PROBES:
        models = list(gaps)
        lines += [f"Gap closed, {kind} probe:", "", "| | chance | ceiling | " + " | ".join(models) + " |",
                  "|---" * (3 + len(models)) + "|"]
        for key in rows:
            if key in ceilings:
                c = ceilings[key]
                head = f"| {key} | {c['chance']:.3f} | {_ci(c)}{'' if c['learnable'] else ' (not learnable)'} |"
            else:
                head = f"| **{key}** | | |"
            lines.append(head + " " + " | ".join(_gap(gaps[m][kind].get(key)) for m in models) + " |")
        lines.append("")
    return lines


def _where(point) -> str:
    return "default" if point in ("default", {}) else ", ".join(f"{k} {v}" for k, v in point.items())


def report_markdown(results: dict) -> str:
    """The report: accuracy per family and task with 95% intervals (largest label fraction), which
    differences are resolved, accuracy vs label fraction, the layer search, physics, cost."""
    from .physics import physics_markdown

    families = results["families"]
    tasks = _tasks(results)
    top = max(results["fractions"], key=float)
    failed = {name: entry["failed"] for name, entry in results["models"].items() if "failed" in entry}
    lines = [f"# patchworld compare — {results['name']}", "",
             *(["**Failed** (left out of every table, difference and gap closed):", "",
                *(f"* {line}" for line in failed.values()), ""] if failed else []),
             f"{len(results['models'])} feature sources; probes: attentive (learned-query cross-attention over all "
             f"tokens) and linear (mean-pooled); lr x weight decay sweep {results['sweep']}, chosen on validation; "
             f"test accuracy averaged over {results['seeds']} seeds, [bootstrap 95% interval over test clips]. Every "
             f"model is read at the layer (and noise level) the same validation search chose; `@default` rows read "
             f"it where its objective does by default. Wall time {results['wall_time_s'] / 60:.1f} min.", ""]
    for kind in PROBES:
        lines += [f"## {kind.capitalize()} probe, {float(top):.0%} of the labels", "",
                  "| model | " + " | ".join(families) + " | " + " | ".join(tasks) + " |",
                  "|---" * (1 + len(families) + len(tasks)) + "|"]
        for name, summary, entry in _rows(results):
            probes = entry["probes_default"] if name.endswith("@default") else entry["probes"]
            cells = [_ci(summary[kind][top][f]) for f in families] + [_ci(probes[kind][top][t]) for t in tasks]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        first = next((entry["probes"][kind][top] for entry in succeeded(results).values()), {})
        lines += ["| chance | " + " | ".join("" for _ in families) + " | "
                  + " | ".join(_fmt(first.get(t, {}).get("chance")) for t in tasks) + " |", ""]
        differences = results.get("differences", {}).get(kind, {})
        if differences:
            lines += [f"Differences in family accuracy ({kind} probe, {float(top):.0%} labels; each model against its "
                      "random-init control and the next one down; paired bootstrap over the same test clips):", "",
                      "| family | a | b | a - b | 95% CI | |", "|---|---|---|---|---|---|"]
            for family, rows in differences.items():
                for d in rows:
                    lines.append(f"| {family} | {d['a']} | {d['b']} | {d['value']:+.3f} | "
                                 f"[{d['low']:+.3f}, {d['high']:+.3f}] | {d['label']} |")
            lines.append("")
    lines += ceiling_markdown(results)
    lines += ["## Mean accuracy over all tasks vs label fraction", "",
              "| model | probe | " + " | ".join(f"{float(f):.0%}" for f in results["fractions"]) + " |",
              "|---" * (2 + len(results["fractions"])) + "|"]
    for name, summary, _ in _rows(results, defaults=False):  # default readings are probed at the top fraction only
        for kind in PROBES:
            cells = [_fmt(statistics.fmean(summary[kind][f][fam]["mean"] for fam in families)) for f in results["fractions"]]
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    searched = {n: e["feature_search"] for n, e in results["models"].items() if e.get("feature_search")}
    if searched:
        lines += ["", "## Layer search (mean validation accuracy over all tasks, linear probe)", ""]
        for name, search in searched.items():
            lines.append(f"* {name}: default {search['default_val_accuracy']:.3f}; "
                         + ", ".join(f"{_where({k: v for k, v in g.items() if k != 'val_accuracy'})}: {g['val_accuracy']:.3f}"
                                     for g in search["grid"])
                         + f" — chosen: **{_where(search['chosen'])}**")
    if results.get("physics"):
        lines += ["", *physics_markdown(results["physics"], results["physics"]["spec"])]
    lines += ["", "## Cost", "",
              "| model | source | parameters | FLOPs/step | steps | training FLOPs | wall time (s) | peak memory (MB) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, entry in succeeded(results).items():
        c = entry["cost"]
        lines.append(f"| {name} | {c['source']} | {_si(c.get('parameters'))} | {_si(c.get('flops_per_step'))} | "
                     f"{c.get('steps', '—')} | {_si(c.get('train_flops'))} | {_fmt(c.get('wall_time_s'), '.1f')} | "
                     f"{_fmt(c.get('peak_memory_mb'), '.0f')} |")
    lines += ["", *wall_time_markdown(results)]
    return "\n".join(lines) + "\n"


def write_plots(results: dict, directory: Path) -> list[Path]:
    """compare-families.png, compare-fractions.png, compare-cost.png, compare-gap.png when the study measured
    ceilings, and physics-curves.png and physics-accuracy.png when it scored physics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(results["families"])
    rows = _rows(results)
    top = max(results["fractions"], key=float)
    written = []

    def save(fig, name: str) -> None:
        path = directory / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(path)

    width = 0.8 / max(1, len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, kind in zip(axes, PROBES):
        for i, (name, summary, _) in enumerate(rows):
            cells = [summary[kind][top][f] for f in families]
            err = [[c["mean"] - c["ci"]["low"] for c in cells], [c["ci"]["high"] - c["mean"] for c in cells]]
            ax.bar(np.arange(len(families)) + i * width, [c["mean"] for c in cells], width, yerr=err, capsize=2,
                   label=name)
        ax.set_xticks(np.arange(len(families)) + width * (len(rows) - 1) / 2, families)
        ax.set_title(f"{kind} probe, {float(top):.0%} labels")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("mean test accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    save(fig, "compare-families.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    fractions = [float(f) for f in results["fractions"]]
    for ax, kind in zip(axes, PROBES):
        for name, summary, _ in _rows(results, defaults=False):
            ax.plot(fractions, [statistics.fmean(summary[kind][f][fam]["mean"] for fam in families) for f in results["fractions"]],
                    marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
        ax.set_xlabel("label fraction")
        ax.set_title(f"{kind} probe: mean over tasks")
    axes[0].set_ylabel("mean test accuracy")
    axes[1].legend(fontsize=7)
    save(fig, "compare-fractions.png")

    if results.get("physics"):
        from .physics import plot_accuracy, plot_curves

        plot_curves(results["physics"], directory / "physics-curves.png")
        plot_accuracy(results["physics"], directory / "physics-accuracy.png", results["physics"]["spec"]["score"])
        written += [directory / "physics-curves.png", directory / "physics-accuracy.png"]

    gaps = results.get("gap_closed") or {}
    if gaps:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
        width = 0.8 / len(gaps)
        for ax, kind in zip(axes, PROBES):
            for i, (name, per_probe) in enumerate(gaps.items()):
                cells = [per_probe[kind].get(f) for f in families]
                values = [c["value"] if c else 0.0 for c in cells]
                err = [[c["value"] - c["low"] if c else 0.0 for c in cells], [c["high"] - c["value"] if c else 0.0 for c in cells]]
                ax.bar(np.arange(len(families)) + i * width, values, width, yerr=err, capsize=2, label=name)
            ax.axhline(0, color="k", lw=0.8)
            ax.axhline(1, color="k", lw=0.8, ls="--")
            ax.set_xticks(np.arange(len(families)) + width * (len(gaps) - 1) / 2, families)
            ax.set_title(f"{kind} probe, {float(top):.0%} labels")
        axes[0].set_ylabel("gap closed (0 = random init, 1 = supervised)")
        axes[1].legend(fontsize=7)
        save(fig, "compare-gap.png")

    names = list(succeeded(results))
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    for ax, (key, label) in zip(axes, (("parameters", "parameters"), ("train_flops", "training FLOPs"),
                                        ("wall_time_s", "training wall time (s)"), ("peak_memory_mb", "peak memory (MB)"))):
        values = [results["models"][n]["cost"].get(key) or 0 for n in names]
        ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    save(fig, "compare-cost.png")
    return written


def write_outputs(results: dict, directory: Path) -> list[Path]:
    """report.md, results.json and the plots, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(directory / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=str))
    written.append(directory / "results.json")
    written += write_plots(results, directory)
    with atomic_path(directory / "report.md") as tmp:
        tmp.write_text(report_markdown(results))
    written.append(directory / "report.md")
    return written

