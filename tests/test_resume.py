"""Exact resume: a seeded run resumed from a mid-epoch checkpoint (with or without a kill -9) ends with the
weights and optimizer state of the uninterrupted run.

What makes it exact: every objective draw is keyed on (run seed, step, sample) (patchworld.randomness), the
datamodules' `ResumableDataLoader` continues the epoch after the last consumed batch, and the checkpoint
carries the run seed and the global RNG states. The recipes' bf16-mixed precision is used as shipped: on
the CPU it is deterministic for a fixed batch shape, so the runs agree bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

#: tiny sizes per recipe (command-line overrides), so each run takes seconds on 2 cores
TINY_VIT = ["--model.backbone.init_args.depth=2", "--model.backbone.init_args.dim=64", "--model.backbone.init_args.heads=2"]
TINY_DATA = ["--data.init_args.batch_size=4", "--data.init_args.size=[32,32]", "--data.init_args.frames=8",
             "--data.init_args.val_size=4"]
TINY = {
    "videomae-tiny": [*TINY_VIT, *TINY_DATA, "--model.objective.init_args.predictor_dim=32",
                      "--model.objective.init_args.predictor_depth=1", "--model.objective.init_args.predictor_heads=2"],
    "vjepa-tiny": [*TINY_VIT, *TINY_DATA, "--model.objective.init_args.predictor_dim=32",
                   "--model.objective.init_args.predictor_depth=1", "--model.objective.init_args.predictor_heads=2",
                   "--model.objective.init_args.monitor_every=2"],
    "sora-tiny": [*TINY_VIT, *TINY_DATA, "--data.init_args.size=[16,16]",
                  "--model.conditioner=TinyTextEncoder", "--model.conditioner.init_args.dim=32",
                  "--model.conditioner.init_args.depth=1", "--model.conditioner.init_args.heads=2"],
}


def fit_args(recipe: str, root: Path, steps: int, every: int, train_size: int, *extra: str) -> list[str]:
    """`patchworld fit` arguments: `steps` steps of a tiny `recipe`, a checkpoint every `every` steps under
    root/checkpoints (step=N.ckpt), a validation every 3 steps, full learning rate from the first step."""
    checkpoint = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(root / "checkpoints"), "filename": "{step}", "every_n_train_steps": every,
                                "save_top_k": -1, "save_last": False}}
    return ["fit", "--config", recipe, f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}",
            f"--trainer.callbacks={json.dumps([checkpoint])}", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
            "--trainer.max_time=null", "--model.warmup_steps=1", f"--data.init_args.train_size={train_size}",
            *TINY[recipe], *extra]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def tensors(state, prefix: str = ""):
    """(name, tensor) of every tensor and number in a nested state (dicts, lists)."""
    if isinstance(state, dict):
        for key, value in state.items():
            yield from tensors(value, f"{prefix}.{key}")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from tensors(value, f"{prefix}.{i}")
    elif torch.is_tensor(state):
        yield prefix, state
    elif isinstance(state, (int, float)) and not isinstance(state, bool):
        yield prefix, torch.tensor(float(state))


def differences(reference: dict, other: dict) -> tuple[float, float]:
    """Max abs and max relative (to the reference tensor's largest magnitude) difference between the model
    weights and the optimizer states of two checkpoints; every tensor must be present in both."""
    keys = ("state_dict", "optimizer_states", "current_model_state")  # the last: the raw weights beside an EMA
    mine = dict(tensors({key: reference[key] for key in keys if key in reference}))
    theirs = dict(tensors({key: other[key] for key in keys if key in other}))
    assert mine.keys() == theirs.keys()
    worst_abs = worst_rel = 0.0
    for name, value in mine.items():
        a, b = value.double(), theirs[name].double()
        assert a.shape == b.shape, name
        if a.numel() == 0:
            continue
        gap = (a - b).abs().max().item()
        worst_abs, worst_rel = max(worst_abs, gap), max(worst_rel, gap / max(a.abs().max().item(), 1e-12))
    return worst_abs, worst_rel


def moved(start: dict, end: dict) -> float:
    """How far training moved the weights (max relative change), to show a mismatch would be visible."""
    return max((end["state_dict"][k].double() - v.double()).abs().max().item() / max(v.abs().max().item(), 1e-12)
               for k, v in start["state_dict"].items() if v.is_floating_point() and v.numel())


# 5 batches per epoch: the checkpoint at step 4 is mid-epoch and the resumed run crosses into epoch 1
@pytest.mark.parametrize("recipe,extra", [("videomae-tiny", []), ("sora-tiny", []), ("vjepa-tiny", []),
                                          ("sora-tiny", ["--model.ema=0.9"])],
                         ids=["videomae-tiny", "sora-tiny", "vjepa-tiny", "sora-tiny-ema"])
def test_resume_from_a_mid_epoch_checkpoint_is_exact(recipe, extra, run_cli, tmp_path):
    started = time.perf_counter()
    assert run_cli(*fit_args(recipe, tmp_path / "whole", 8, 4, 20, *extra)) == 0
    middle = tmp_path / "whole" / "checkpoints" / "step=4.ckpt"
    assert load(middle)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 4}]
    assert ("current_model_state" in load(middle)) == bool(extra)  # an EMA run keeps the raw weights beside it
    assert run_cli(*fit_args(recipe, tmp_path / "resumed", 8, 4, 20, *extra), f"--ckpt_path={middle}") == 0
    reference, resumed = load(tmp_path / "whole" / "checkpoints" / "step=8.ckpt"), load(tmp_path / "resumed" / "checkpoints" / "step=8.ckpt")
    assert resumed["global_step"] == 8 and resumed["patchworld_randomness"]["seed"] == 0
    worst_abs, worst_rel = differences(reference, resumed)
    print(f"\n{recipe} resume at step 4 of 8: max abs {worst_abs:.3g}, max rel {worst_rel:.3g}, weights moved "
          f"{moved(load(middle), reference):.3g} relative; {time.perf_counter() - started:.1f} s")
    assert worst_rel <= 1e-6, (worst_abs, worst_rel)


def test_kill_9_mid_run_then_resume_is_exact(run_cli, tmp_path):
    """A real `patchworld fit` process killed with SIGKILL once its step-6 checkpoint exists, resumed from
    its step-3 checkpoint (complete by then), ends where the uninterrupted run ends."""
    started = time.perf_counter()
    steps, every, train_size = 12, 3, 64  # 16 batches per epoch: steps 3 and 6 are mid-epoch
    assert run_cli(*fit_args("videomae-tiny", tmp_path / "whole", steps, every, train_size)) == 0
    reference = load(tmp_path / "whole" / "checkpoints" / f"step={steps}.ckpt")

    root = tmp_path / "killed"
    command = [sys.executable, "-m", "patchworld.cli", *fit_args("videomae-tiny", root, steps, every, train_size)]
    env = os.environ | {"PYTHONHASHSEED": "0"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    newer = root / "checkpoints" / f"step={2 * every}.ckpt"  # once it exists, step=3.ckpt is complete
    deadline = time.monotonic() + 120
    while not newer.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (root / "checkpoints" / f"step={steps}.ckpt").exists()  # it really died mid-run

    middle = root / "checkpoints" / f"step={every}.ckpt"
    resumed_run = subprocess.run([*command, f"--ckpt_path={middle}"], cwd=tmp_path, env=env, capture_output=True)
    assert resumed_run.returncode == 0, resumed_run.stderr.decode()[-2000:]
    resumed = load(root / "checkpoints" / f"step={steps}.ckpt")
    worst_abs, worst_rel = differences(reference, resumed)
    print(f"\nkill -9 after step {2 * every}, resumed from step {every} of {steps}: max abs {worst_abs:.3g}, "
          f"max rel {worst_rel:.3g}; {time.perf_counter() - started:.1f} s")
    assert worst_rel <= 1e-6, (worst_abs, worst_rel)


# ---- the pieces: keyed draws, the distributed batch sampler, the resumable loader -----------------------
class _World:
    """What patchworld.randomness reads from a WorldModel."""

    def __init__(self, step: int, training: bool = True, seed: int = 0):
        self.global_step, self.training, self.seed, self._trainer = step, training, seed, object()


def test_draws_depend_on_seed_step_and_sample_only():
    from patchworld.randomness import batch_generator, draw, sample_generators

    def noise(world, index):
        return draw(torch.randn, sample_generators(world, {"video": torch.zeros(len(index)), "index": torch.tensor(index)}, "noise"), len(index), 3)

    a, b = noise(_World(5), [4, 7]), noise(_World(5), [9, 4, 1])
    assert torch.equal(a[0], b[1])  # sample 4 draws the same wherever it sits in whichever batch
    assert not torch.equal(a[0], a[1]) and not torch.equal(a, noise(_World(6), [4, 7]))  # other sample / step
    assert not torch.equal(a, noise(_World(5, seed=1), [4, 7]))  # other run seed
    assert torch.equal(noise(_World(5, training=False), [4, 7]), noise(_World(50, training=False), [4, 7]))  # validation
    shared = [torch.rand(2, generator=batch_generator(_World(5), "crop")) for _ in range(2)]
    assert torch.equal(*shared)
    assert noise(_World(5), [0, 1]).shape == (2, 3)


def test_sampler_splits_every_global_batch_between_ranks():
    from patchworld.data.sampler import BucketBatchSampler

    shapes = [(2, 8, 8), (4, 8, 8), (4, 8, 16)]
    one = BucketBatchSampler(12, 4, shapes, shuffle=True, seed=3, rank=0, world_size=1)
    ranks = [BucketBatchSampler(12, 2, shapes, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sampler in (one, *ranks):
        sampler.set_epoch(1)
    assert len(one) == len(ranks[0]) == 3
    for whole, first, second in zip(one, *ranks):
        assert whole == first + second  # same indices, same shape per global batch
    one.set_epoch(2)
    assert list(one) != [batch for batch in BucketBatchSampler(12, 4, shapes, shuffle=True, seed=3, world_size=1)]
    # 10 clips on 2 ranks: the last global batch is topped up so both ranks get equal batches
    padded = [list(BucketBatchSampler(10, 2, shuffle=False, rank=r, world_size=2)) for r in (0, 1)]
    assert padded == [[[0, 1], [4, 5], [8, 9]], [[2, 3], [6, 7], [0, 1]]]


def test_loader_resumes_mid_epoch_without_loading_the_consumed_batches():
    from patchworld.data.sampler import BucketBatchSampler, ResumableDataLoader

    class Items(torch.utils.data.Dataset):
        def __init__(self):
            self.loaded = []

        def __len__(self):
            return 20

        def __getitem__(self, index):
            self.loaded.append(index)
            return index

    def loader(dataset):
        return ResumableDataLoader(dataset, batch_sampler=BucketBatchSampler(20, 3, shuffle=True, seed=1, world_size=1))

    whole = loader(Items())
    whole.batch_sampler.set_epoch(2)
    uninterrupted = [b.tolist() for b in whole]
    first = loader(Items())
    first.batch_sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 3} and seen == uninterrupted[:3]
    dataset = Items()
    resumed = loader(dataset)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # a checkpoint taken before the first batch keeps the position
    rest = [b.tolist() for b in resumed]
    assert rest == uninterrupted[3:] and sorted(dataset.loaded) == sorted(sum(rest, []))  # nothing skipped was loaded
    resumed.batch_sampler.set_epoch(3)
    assert len([b for b in resumed]) == len(uninterrupted)  # the next epoch is whole again
