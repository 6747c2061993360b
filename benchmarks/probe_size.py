"""How many labelled clips (and probe steps) do the probes need? Probe accuracy against the number of
probe-training clips, on one feature source, until it flattens (issue 27, "enough labels").

Features of the largest probe-training set are extracted once (`Study.features`, as `compare` does), then
each probe of the study's protocol (its (lr, weight decay) sweep, chosen on validation) trains on the first
n clips for every n in --sizes, at every step count in --steps; test accuracy on the same 256 test clips.

    python benchmarks/probe_size.py                                   # raw pixel tubelets, learnable data
    python benchmarks/probe_size.py --source vjepa-tiny               # a recipe's random-init network
    python benchmarks/probe_size.py --source vjepa-tiny --checkpoint runs/x/last.ckpt   # a trained one
    python benchmarks/probe_size.py --speed          # the attentive probe's pooling against per-head products

Prints one markdown table per probe kind: test accuracy [95% interval] per task, rows = (clips, steps).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from patchworld.evaluation.clips import DataSpec
from patchworld.evaluation.compare import parse_study
from patchworld.evaluation.contestants import PixelFeatures
from patchworld.evaluation.probes import probe_inputs, probe_sweep
from patchworld.evaluation.statistics import accuracy_estimate
from patchworld.evaluation.study import FAMILIES, ModelSpec, ProbeSpec, Study

LEARNABLE = {"object_scale": 2.0, "friction": 0.2}


def speed(batch: int = 512, tokens: int = 64, dim: int = 128, tasks: int = 3, repeats: int = 10) -> None:
    """Seconds per forward + backward of `AttentiveProbe.pool` against the same pooling written as one small
    product per head (the earlier implementation), in this process, on one probe batch."""
    from patchworld.evaluation.probes import AttentiveProbe
    probe = AttentiveProbe(dim, [4] * tasks, heads=4)
    torch.nn.init.normal_(probe.queries)  # a trained probe's queries are not zero (zero pools uniformly)
    x = torch.randn(batch, tokens, dim)

    def per_head(x):
        H, d = probe.queries.shape[1:]
        xv = x.view(batch, tokens, H, d)  # (B, L, H, d)
        weights = (torch.einsum("blhd,thd->bthl", xv, probe.queries) / d**0.5).softmax(-1)  # (B, T, H, L)
        return torch.einsum("bthl,blhd->bthd", weights, xv).reshape(batch, tasks, dim)

    print(f"| pooling ({batch} clips x {tokens} tokens x {dim}, {tasks} tasks, {torch.get_num_threads()} threads) "
          "| s / step | ratio |\n|---|---|---|")
    timings = {}
    for name, pool in (("per-head products (before)", per_head), ("two large products (AttentiveProbe.pool)", probe.pool)):
        pool(x).sum().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            pool(x).sum().backward()
        timings[name] = (time.perf_counter() - start) / repeats
        print(f"| {name} | {timings[name]:.4f} | {timings[name] / next(iter(timings.values())):.2f}x |")
    with torch.no_grad():
        print(f"largest difference between the two: {float((per_head(x) - probe.pool(x)).abs().max()):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="pixels", help="'pixels' or a recipe (its network, random init unless --checkpoint)")
    parser.add_argument("--checkpoint", help="a trained checkpoint of --source's recipe")
    parser.add_argument("--data", type=json.loads, default=LEARNABLE, help="DataSpec fields over compare-tiny's, JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--steps", type=int, nargs="+", default=[150, 600], help="probe training steps")
    parser.add_argument("--kinds", nargs="+", default=["attentive", "linear"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed", action="store_true", help="only time the attentive probe's pooling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.speed:
        return speed()
    tasks = [t for family in FAMILIES.values() for t in family]
    base = parse_study(["--config", "compare-tiny"])[1]["data"]  # the shipped study's data
    data = DataSpec(**(base | {"probe_train": max(args.sizes)} | args.data))
    probe = ProbeSpec(lrs=[3e-3, 3e-2], weight_decays=[1e-3, 1e-1], heads=4, seeds=1, fractions=[1.0])
    study = Study([], [], data, probe, None, Path("runs/probe-size"), bf16=False, progress=False)
    start = time.perf_counter()
    if args.source == "pixels":
        model, frames = PixelFeatures((2, 8, 8)), data.frames
    else:
        spec = ModelSpec(args.source, recipe=args.source, checkpoint=args.checkpoint, train=bool(args.checkpoint))
        model, frames, _ = study.contestants.prepare_model(spec, tqdm(disable=True))
    feats = study.features(model, frames, {})
    print(f"{args.source}{' ' + args.checkpoint if args.checkpoint else ''}: features of "
          f"{data.probe_train}/{data.probe_val}/{data.probe_test} clips in {time.perf_counter() - start:.0f} s; "
          f"data {json.dumps(args.data)}", flush=True)
    for kind in args.kinds:
        train, val, test = probe_inputs(kind, feats["train"], feats["val"], feats["test"])
        print(f"\n{kind} probe\n\n| clips | steps | " + " | ".join(tasks) + " | seconds |\n" + "|---" * (len(tasks) + 3) + "|")
        for size in args.sizes:
            for steps in args.steps:
                started = time.perf_counter()
                result = probe_sweep(kind, train.subset(torch.arange(size)), val, test, tasks, probe.lrs,
                                     probe.weight_decays, steps, 0, 1.0, probe.heads, probe.batch_size)
                cells = []
                for task in tasks:
                    e = accuracy_estimate(result[task].test_correct[None])
                    cells.append(f"{result[task].test_accuracy:.2f} [{e.low:.2f}, {e.high:.2f}]")
                print(f"| {size} | {steps} | " + " | ".join(cells) + f" | {time.perf_counter() - started:.0f} |", flush=True)
    print("\nchance (most common test class): " + ", ".join(f"{t} {result[t].chance:.2f}" for t in tasks))


if __name__ == "__main__":
    main()
