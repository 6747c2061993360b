"""Does `patchworld judge` rank what it should? Two tables, each for a trained encoder and its random-init control.

1. Known degradations of SyntheticWorld clips (blur, colour shift, frozen motion, shuffled frames at strengths
   0.25 / 0.5 / 1) against real clips of another split: real vs real should be ~0 and each degradation should
   raise the distance with its strength.
2. A generator's learning curve: `patchworld predict` writes `--clips` text-to-video samples (the predict
   split's captions) from each checkpoint, and their distance to real clips should fall as training goes on.

    python benchmarks/judge.py --encoder runs/vjepa-tiny --data sora-tiny \\
        [--generator sora-tiny --checkpoints runs/curves/sora-tiny/checkpoints/step=*.ckpt] [--clips 64] [--out DIR]

`--encoder` is a fit run (its config.yaml and last.ckpt; the control is the same architecture untrained).
Writes judge.md and judge.json under --out. No assertions.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from patchworld.checkpoints import run_recipe
from patchworld.cli import main as patchworld
from patchworld_plugins.judge import DEGRADATIONS

STRENGTHS = (0.25, 0.5, 1.0)


def encoder_recipe(run: Path, folder: Path) -> tuple[Path, str]:
    """The fit run's recipe as a file `patchworld judge --config` reads, and its checkpoint."""
    recipe, checkpoint = run_recipe(run)
    path = folder / "encoder.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, str(checkpoint)


def distance(recipe: Path, ckpt: str | None, data: str, real: str, fake: str, clips: int, folder: Path,
             degrade: str | None = None) -> dict:
    out = folder / "result.json"
    code = patchworld(["judge", "--config", str(recipe), "--data", data, "--real", real, "--fake", fake,
                       "--clips", str(clips), "--precision", "32", "--out", str(out),
                       *(["--ckpt_path", ckpt] if ckpt else []), *(["--degrade", degrade] if degrade else [])])
    if code != 0:
        raise SystemExit(f"judge.py: patchworld judge failed (exit {code})")
    return json.loads(out.read_text())["distances"]


def cell(result: dict, name: str = "mmd") -> str:
    d = result[name]
    return f"{d['value']:.4f} ({d['low']:.4f}–{d['high']:.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="a fit run directory (or .ckpt) of the encoder")
    parser.add_argument("--data", required=True, help="the recipe whose SyntheticWorld clips are judged")
    parser.add_argument("--generator", default=None, help="the generator recipe of --checkpoints")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="generator checkpoints along its learning curve")
    parser.add_argument("--overrides", nargs="*", default=[], help="the generator's extra fit arguments")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--out", default="runs/judge")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict = {"degradations": {}, "curve": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        recipe, checkpoint = encoder_recipe(Path(args.encoder), folder)
        encoders = {"trained": checkpoint, "random-init": None}
        for label, ckpt in encoders.items():
            rows = {"real (val split)": distance(recipe, ckpt, args.data, "synthetic:test", "synthetic:val", args.clips, folder)}
            for kind in DEGRADATIONS:
                for strength in STRENGTHS:
                    rows[f"{kind} {strength}"] = distance(recipe, ckpt, args.data, "synthetic:test", "synthetic:val",
                                                          args.clips, folder, f"{kind}:{strength}")
            results["degradations"][label] = rows
        for path in args.checkpoints:
            samples = folder / Path(path).stem
            code = patchworld(["predict", "--config", args.generator, "--ckpt_path", path, *args.overrides,
                               "--data.init_args.predict_size", str(args.clips), "--data.init_args.batch_size", "16",
                               "--model.decoder.init_args.strip_frames", "0", "--trainer.enable_progress_bar", "false",
                               "--trainer.default_root_dir", str(samples), "--trainer.logger", "false"])
            if code != 0:
                raise SystemExit(f"judge.py: patchworld predict failed on {path} (exit {code})")
            results["curve"][Path(path).stem] = {
                label: distance(recipe, ckpt, args.data, "synthetic:test", str(samples), args.clips, folder)
                for label, ckpt in encoders.items()}
    lines = [f"Encoder {args.encoder}, {args.clips} clips a set, MMD^2 (polynomial kernel) with 95% bootstrap intervals.",
             "", "| fake set | " + " | ".join(results["degradations"]) + " |", "|---|" + "---|" * len(results["degradations"])]
    for row in next(iter(results["degradations"].values())):
        lines.append(f"| {row} | " + " | ".join(cell(r[row]) for r in results["degradations"].values()) + " |")
    if results["curve"]:
        lines += ["", "| generator checkpoint | " + " | ".join(f"{e} MMD | {e} Fréchet" for e in encoders) + " |",
                  "|---|" + "---|---|" * len(encoders)]
        for step, row in results["curve"].items():
            lines.append(f"| {step} | " + " | ".join(f"{cell(row[e])} | {row[e]['frechet']['value']:.3f}" for e in encoders) + " |")
    lines += ["", f"{(time.time() - started) / 60:.1f} minutes"]
    (out / "judge.md").write_text("\n".join(lines) + "\n")
    (out / "judge.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
