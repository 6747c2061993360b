"""Which representation plans better: the reduced planning comparison of docs/worlds.md, end to end.

Trains a V-JEPA encoder on ActionWorld clips (vjepa-tiny's recipe), then act-tiny's action-conditioned
predictor on three frozen encoders (raw pixels, that V-JEPA, a random-init ViT of V-JEPA's shape), then runs
`patchworld plan` on the same seeded episodes with each, and prints one markdown table: success with its
95% interval, final distance and planning seconds per episode, plus the random and oracle rows, and the
wall time of every step.

    OMP_NUM_THREADS=1 python benchmarks/planning.py --root runs/planning            # ~45 min on 2 shared cores
    python benchmarks/planning.py --root runs/planning --episodes 20 --act_steps 200  # a quick look
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from patchworld.cli import main as patchworld

VIT = ["--model.backbone", "ViT", "--model.backbone.init_args.dim", "128", "--model.backbone.init_args.depth", "4",
       "--model.backbone.init_args.heads", "4", "--model.backbone.init_args.patch_size", "[2, 8, 8]"]


def run(args: list[str], seconds: dict, name: str) -> None:
    began = time.perf_counter()
    if patchworld(args) != 0:
        raise SystemExit(f"patchworld {' '.join(args)} failed")
    seconds[name] = time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/planning", help="folder for the runs and plans")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--jepa_steps", type=int, default=600, help="V-JEPA training steps on ActionWorld")
    parser.add_argument("--act_steps", type=int, default=800, help="action-conditioned predictor steps")
    args = parser.parse_args()
    root, seconds = Path(args.root), {}
    quiet = ["--trainer.enable_progress_bar", "false"]
    run(["fit", "--config", "vjepa-tiny", "--data", "ActionWorld", "--data.init_args.size", "[32, 32]",
         "--data.init_args.batch_size", "16", "--trainer.max_steps", str(args.jepa_steps), "--trainer.val_check_interval",
         str(args.jepa_steps // 2), "--trainer.default_root_dir", str(root / "vjepa-act"), *quiet], seconds, "train vjepa")
    encoders = {"pixels": [], "vjepa": ["--model.objective.init_args.encoder", str(root / "vjepa-act")], "random-init": VIT}
    for name, extra in encoders.items():
        run(["fit", "--config", "act-tiny", *extra, "--trainer.max_steps", str(args.act_steps),
             "--trainer.default_root_dir", str(root / f"act-{name}"), *quiet], seconds, f"train act-{name}")
    rows = {}
    for name in encoders:
        run(["plan", str(root / f"act-{name}"), "--episodes", str(args.episodes), "--videos", "6", "--output",
             str(root / f"plan-{name}")], seconds, f"plan {name}")
        policies = json.loads((root / f"plan-{name}" / "plan.json").read_text())["policies"]
        rows[name] = policies[f"cem:act-{name}"]
        rows |= {baseline: policies[baseline] for baseline in ("random", "oracle")}
    print("| encoder / policy | success | 95% interval | final distance | seconds / episode |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        s = row["success"]
        print(f"| {name} | {s['value']:.2f} | [{s['low']:.2f}, {s['high']:.2f}] | {row['final_distance']:.3f} | "
              f"{row['seconds_per_episode']:.2f} |")
    print("\n" + "\n".join(f"{name}: {value:.0f} s" for name, value in seconds.items()))


if __name__ == "__main__":
    main()
