"""DDP on CPU (gloo): 2 processes with batch B per process train exactly like one process with batch 2B,
with a different (T, H, W) bucket drawn per step.

It holds because every global batch, and its bucket, is split between ranks by the datamodule's
`BucketBatchSampler` (so both runs see the same global batches at the same sizes; a rank on another bucket
would train on other clips) and every random draw is keyed on the sample, not on the process
(patchworld.randomness). Lightning's DDP launcher re-executes the command line, so the runs are real
`patchworld fit` subprocesses.

The runs use 32-true precision: under bf16-mixed every weight gradient comes out of a bf16 matmul (8
mantissa bits) over the *local* batch, so DDP rounds two half-batch gradients and averages them where one
process rounds the full-batch gradient once; they differ by ~0.4% and Adam passes that on (measured: 3e-4
max abs after 4 steps). The forward pass itself is batch-independent in bf16 too, and the resume tests,
which keep the batch shape, are exact in bf16.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from test_resume import differences, fit_args, load


BUCKETS = "--data.init_args.buckets=[[8, 32, 32], [4, 32, 48], [6, 48, 32]]"


def fit(root, batch_size: int, *extra: str) -> dict:
    """Run 4 steps of a tiny videomae-tiny on three buckets in a subprocess; return its final checkpoint."""
    args = fit_args("videomae-tiny", root, 4, 4, 64, f"--data.init_args.batch_size={batch_size}", BUCKETS,
                    "--trainer.accelerator=cpu", "--trainer.precision=32-true", *extra)
    # the same thread count in every process (Lightning's DDP sets 1 per process on 2 cores otherwise)
    env = os.environ | {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "patchworld.cli", *args], cwd=root.parent, env=env,
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    return load(root / "checkpoints" / "step=4.ckpt")


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    started = time.perf_counter()
    single = fit(tmp_path / "single", 4, "--trainer.devices=1")
    ddp = fit(tmp_path / "ddp", 2, "--trainer.devices=2", "--trainer.strategy=ddp")
    assert single["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 4}]
    worst_abs, worst_rel = differences(single, ddp)
    print(f"\nDDP 2 x batch 2 vs 1 x batch 4, 4 steps: max abs {worst_abs:.3g}, max rel {worst_rel:.3g}; "
          f"{time.perf_counter() - started:.1f} s")
    assert worst_rel <= 1e-5, (worst_abs, worst_rel)
