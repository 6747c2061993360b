"""Training-step time on a shared CPU: compute threads x OpenMP wait policy, alone and next to busy processes.

PyTorch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the PyPI wheels). Between two parallel
regions its threads spin, waiting for the next one (OMP_WAIT_POLICY=ACTIVE-like, libgomp's default when
the threads fit the cores). That is fastest on an idle machine, but when another process wants a core, a
spinning thread takes turns with it, and every parallel region then waits for whichever thread the kernel
scheduler left out. The table measures that: each setting runs in a fresh process (the policy is read when
libgomp loads), next to 0, 1 or 2 single-threaded busy loops.

    python benchmarks/threads.py [--steps 8] [--competitors 0 1 2] [--threads 1 2]

One step = a V-JEPA tiny training step (benchmarks/vjepa_step.py's "tiny" config, fp32). s/step is the
median over `--steps` steps after two warm-up steps; "vs best alone" divides by the fastest setting with no
competitor. No assertions: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: OpenMP waiting settings: libgomp's default (spin ~300k iterations, then sleep), sleep at once, spin briefly
POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k": {"GOMP_SPINCOUNT": "10000"}}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
STEP = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
from vjepa_step import build, time_steps
torch.set_num_threads({threads})
world, clips, _ = build("tiny", "cpu")
time_steps(world, clips, False, 1)  # warm-up
print(json.dumps(time_steps(world, clips, False, {steps})))
"""


def step_time(threads: int, policy: dict[str, str], steps: int) -> float:
    """Median seconds per step of a fresh process with `threads` compute threads and the OpenMP `policy`."""
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES} | policy
    code = STEP.format(here=str(Path(__file__).resolve().parent), threads=threads, steps=steps)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"V-JEPA tiny training step on {os.cpu_count()} cores; median of {args.steps} steps per cell")
    rows = []
    for competitors in args.competitors:
        loops = busy_loops(competitors)
        try:
            for threads in args.threads:
                for name, policy in POLICIES.items():
                    rows.append((competitors, threads, name, step_time(threads, policy, args.steps)))
        finally:
            for loop in loops:
                loop.kill()
    best = min(seconds for competitors, _, _, seconds in rows if competitors == 0) if args.competitors[0] == 0 else None
    print(f"{'busy loops':>10} {'threads':>7} {'OpenMP waiting':>15} {'s/step':>8} {'vs best alone':>13}")
    for competitors, threads, name, seconds in rows:
        ratio = f"{seconds / best:.2f}x" if best else "-"
        print(f"{competitors:>10} {threads:>7} {name:>15} {seconds:>8.3f} {ratio:>13}")


if __name__ == "__main__":
    main()
