"""Which probe tasks can be learnt at all at a study's data settings: the supervised ceiling of every task
(`patchworld.evaluation.ceiling`, the one `patchworld compare` measures first) for several SyntheticWorld
settings, next to chance. A task whose ceiling does not clear chance cannot tell models apart there.

    python benchmarks/ceilings.py                                  # compare-tiny's data, then the variants below
    python benchmarks/ceilings.py --settings '{"friction": 0.2}'   # one setting (over compare-tiny's data)
    python benchmarks/ceilings.py --steps 1000 --eval_every 50     # a shorter-trained ceiling

Prints a markdown table (test accuracy [95% interval], `!` where not learnable) and the seconds each took.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from patchworld.evaluation.ceiling import CeilingSpec, supervised_ceiling
from patchworld.evaluation.clips import DataSpec, ProbeClips
from patchworld.evaluation.compare import parse_study
from patchworld.evaluation.study import FAMILIES

VARIANTS = [{}, {"object_scale": 2.0, "friction": 0.1}, {"object_scale": 2.0, "friction": 0.1, "probe_train": 1024},
            {"object_scale": 2.5, "friction": 0.2}, {"object_scale": 2.0, "friction": 0.2, "probe_train": 2048}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", action="append", help="JSON overrides of compare-tiny's data (repeatable)")
    parser.add_argument("--steps", type=int, default=CeilingSpec.steps, help="the ceiling's training steps")
    parser.add_argument("--eval_every", type=int, default=CeilingSpec.eval_every, help="validation every this many steps")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = [t for family in FAMILIES.values() for t in family]
    settings = [json.loads(s) for s in args.settings] if args.settings else VARIANTS
    base = parse_study(["--config", "compare-tiny"])[1]["data"]  # the shipped study's data
    print("| data (over compare-tiny's) | " + " | ".join(tasks) + " | seconds |")
    print("|---" * (len(tasks) + 2) + "|")
    for overrides in settings:
        clips = ProbeClips(DataSpec(**(base | overrides)), 64)
        start = time.perf_counter()
        spec = CeilingSpec(steps=args.steps, eval_every=args.eval_every)
        result = supervised_ceiling(clips("train"), clips("val"), clips("test"), tasks, spec)
        seconds = time.perf_counter() - start
        cells = []
        for task in tasks:
            c, e = result[task], result[task].estimate
            cells.append(f"{c.test_accuracy:.2f} [{e.low:.2f}, {e.high:.2f}]{'' if c.learnable else ' !'} ({c.chance:.2f})")
        print(f"| {json.dumps(overrides) if overrides else 'as shipped'} | " + " | ".join(cells) + f" | {seconds:.0f} |",
              flush=True)
    print("\ncells: ceiling test accuracy [95% interval] (chance = most common test class); ! = not learnable")


if __name__ == "__main__":
    main()
