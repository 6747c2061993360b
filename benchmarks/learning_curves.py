"""Learning curves of a generator recipe: validation loss and prompt adherence (shape, colour, direction, with
95% bootstrap intervals) at several step counts of one training run, with the minutes each took here.

    python benchmarks/learning_curves.py --config sora-tiny --steps 250 500 1000 2000 3500 [--samples 48]
        [--ema 0.999] [--out runs/curves/sora-tiny] [-- EXTRA FIT ARGUMENTS]

One `patchworld fit` runs to the largest step count (its learning-rate schedule planned for that many steps,
no wall-time budget), saving a checkpoint and validating at every requested count; then `patchworld
adherence` judges each checkpoint with one judge, trained once. With `--ema` the checkpoints hold both the
average and the raw weights, and both are judged at every step: the EMA lever at equal steps from one run.
Writes curves.md (the table), curves.json and curves.png under --out. No assertions.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

from patchworld.checkpoints import load_checkpoint
from patchworld.cli import main as patchworld
from patchworld.evaluation.statistics import accuracy_estimate

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

ATTRIBUTES = ("shape", "colour", "direction")


def fit(config: str, steps: list[int], root: Path, ema: float | None, extra: list[str]) -> dict[int, float]:
    """Train once to max(steps), a checkpoint and a validation at each of `steps`; minutes at each step."""
    every = int(np.gcd.reduce(steps))
    checkpoints = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(root / "checkpoints"), "filename": "{step}",
                                  "every_n_train_steps": every, "save_top_k": -1, "save_last": False}}]
    started = time.time()
    code = patchworld(["fit", "--config", config, f"--trainer.max_steps={max(steps)}", "--trainer.max_time=null",
                       f"--trainer.val_check_interval={every}", "--trainer.check_val_every_n_epoch=null",
                       f"--trainer.default_root_dir={root}", f"--trainer.callbacks={json.dumps(checkpoints)}",
                       *([f"--model.ema={ema}"] if ema is not None else []), *extra])
    if code != 0:
        raise SystemExit(f"learning_curves.py: patchworld fit failed (exit {code})")
    return {step: (checkpoint(root, step).stat().st_mtime - started) / 60 for step in steps}


def checkpoint(root: Path, step: int) -> Path:
    return root / "checkpoints" / f"step={step}.ckpt"


def raw_weights(path: Path) -> Path:
    """A copy of an EMA run's checkpoint whose model weights are the raw ones (its `current_model_state`)."""
    saved = load_checkpoint(path)
    saved["state_dict"] = saved.pop("current_model_state")
    saved.pop("averaging_state", None)
    raw = path.with_name(f"{path.stem}-raw.ckpt")
    torch.save(saved, raw)
    return raw


def validation_losses(root: Path) -> dict[int, float]:
    """step (1-based) -> val/loss, from the run's metrics.csv (the newest, should --out hold older runs)."""
    metrics = max(root.rglob("metrics.csv"), key=lambda path: path.stat().st_mtime)
    with metrics.open() as file:
        return {int(row["step"]) + 1: float(row["val/loss"]) for row in csv.DictReader(file) if row.get("val/loss")}


def judge(config: str, path: Path, samples: int, root: Path, extra: list[str]) -> dict:
    """`patchworld adherence` on one checkpoint; its results with a bootstrap interval per attribute."""
    out = path.with_suffix(".adherence.json")
    code = patchworld(["adherence", "--config", config, "--ckpt_path", str(path), "--samples", str(samples),
                       "--judge", str(root / "judge.pt"), "--out", str(out), "--overrides", json.dumps(extra)])
    if code != 0:
        raise SystemExit(f"learning_curves.py: patchworld adherence failed on {path} (exit {code})")
    results = json.loads(out.read_text())
    estimates = {"chance": results["chance"]}
    for name in ATTRIBUTES:  # right or wrong on each prompt: the interval resamples prompts
        right = round(results["generated"][name] * results["samples"])
        correct = np.arange(results["samples"]) < right
        estimates[name] = accuracy_estimate(correct).as_dict()
    return estimates


def table(rows: list[dict]) -> str:
    lines = ["| step | minutes | weights | val loss | " + " | ".join(ATTRIBUTES) + " |",
             "|---|---|---|---|" + "---|" * len(ATTRIBUTES)]
    for row in rows:
        cells = [f"{row[n]['value']:.0%} ({row[n]['low']:.0%}–{row[n]['high']:.0%})" for n in ATTRIBUTES]
        loss = f"{row['val_loss']:.3f}" if row["val_loss"] is not None else "–"
        lines.append(f"| {row['step']} | {row['minutes']:.1f} | {row['weights']} | {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], title: str, path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    losses = {row["step"]: row["val_loss"] for row in rows if row["val_loss"] is not None}
    right.plot(list(losses), list(losses.values()), marker="o", color="black")
    for weights in dict.fromkeys(row["weights"] for row in rows):
        mine = [row for row in rows if row["weights"] == weights]
        steps = [row["step"] for row in mine]
        for name, colour in zip(ATTRIBUTES, ("tab:blue", "tab:red", "tab:green")):
            values = [row[name]["value"] for row in mine]
            low = [row[name]["low"] for row in mine]
            high = [row[name]["high"] for row in mine]
            style = "-" if weights == "raw" else "--"
            left.plot(steps, values, style, color=colour, marker="o", label=f"{name} ({weights})")
            left.fill_between(steps, low, high, color=colour, alpha=0.1)
    for name, colour in zip(ATTRIBUTES, ("tab:blue", "tab:red", "tab:green")):
        left.axhline(rows[0]["chance"][name], color=colour, linestyle=":", linewidth=1)  # chance
    left.set(xlabel="steps", ylabel="adherence", ylim=(0, 1), title=f"{title}: prompt adherence (dotted: chance)")
    left.legend(fontsize=7)
    right.set(xlabel="steps", ylabel="validation loss", title="validation loss (the weights validation uses)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a generator recipe (path or shipped name)")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000, 3500])
    parser.add_argument("--samples", type=int, default=48, help="test prompts judged per checkpoint")
    parser.add_argument("--ema", type=float, default=None, help="also train an EMA of the weights; judge both")
    parser.add_argument("--out", default=None, help="where the run and the results go (default runs/curves/NAME)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    steps = sorted(set(args.steps))
    root = Path(args.out or f"runs/curves/{Path(args.config).stem}")
    minutes = fit(args.config, steps, root, args.ema, extra)
    losses = validation_losses(root)
    rows = []
    for step in steps:
        judged = [("raw", checkpoint(root, step))] if args.ema is None else \
            [("raw", raw_weights(checkpoint(root, step))), (f"EMA {args.ema}", checkpoint(root, step))]
        for weights, path in judged:
            rows.append({"step": step, "minutes": minutes[step], "weights": weights, "val_loss": losses.get(step),
                         **judge(args.config, path, args.samples, root, extra)})
    text = table(rows)
    print(f"\n{args.config}: {' '.join(extra)}\n{text}")
    (root / "curves.md").write_text(text + "\n")
    (root / "curves.json").write_text(json.dumps(rows, indent=1))
    plot(rows, Path(args.config).stem, root / "curves.png")
    print(f"wrote {root / 'curves.md'}, curves.json and curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
