"""Training runs that can be trusted: the recipe wins over a checkpoint's saved settings, a NaN never reaches
the weights or a checkpoint, interrupted runs leave a resumable checkpoint, and the command line means what
the user typed."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.precision import MixedPrecision

from patchworld import PatchworldError, WorldModel
from patchworld.checkpoints import find_last, load_checkpoint
from patchworld.data import SyntheticWorld
from patchworld.guard import NonFiniteError
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.videomae import VideoMAE
from patchworld_plugins.vit import ViT

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SORA_TINY = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
             "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "32",
             "--model.conditioner.init_args.depth", "1", "--trainer.precision", "32-true", "--trainer.logger", "false",
             "--trainer.default_root_dir", "run"]
MAE_TINY = ["--model.backbone.init_args.depth", "1", "--model.backbone.init_args.dim", "64",
            "--model.backbone.init_args.heads", "2", "--data.init_args.batch_size", "2", "--data.init_args.size",
            "[32, 32]", "--data.init_args.frames", "4", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false"]


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_command_line_sampling_settings_win_over_the_checkpoint(run_cli, tmp_path, monkeypatch):
    """The documented `predict ... --model.objective.init_args.steps N --guidance G` changes the samples."""
    recipe = str(RECIPES / "sora-tiny.yaml")
    assert run_cli("fit", "--config", recipe, *SORA_TINY, "--trainer.max_steps", "3", "--trainer.max_time", "null",
                   "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "2", "--data.init_args.frames",
                   "4", "--data.init_args.size", "[16, 16]") == 0
    checkpoint = find_last(tmp_path / "run")

    def sample(*settings: str) -> np.ndarray:
        assert run_cli("predict", "--config", recipe, *SORA_TINY, "--ckpt_path", checkpoint, "--data", "Prompts",
                       "--data.prompts", '["a red circle moves to the right"]', "--data.frames", "4",
                       "--data.size", "[16, 16]", *settings) == 0
        (video,) = (tmp_path / "run" / "predictions").glob("*.mp4")
        return frames_of(video)

    one_step = sample("--model.objective.init_args.steps", "1")
    assert np.array_equal(sample("--model.objective.init_args.steps", "1"), one_step)  # seeded: reproducible
    assert not np.array_equal(sample("--model.objective.init_args.steps", "4"), one_step)
    assert not np.array_equal(sample("--model.objective.init_args.steps", "1", "--model.objective.init_args.guidance",
                                     "7.0"), one_step)
    from patchworld_plugins.generation import GenerativeObjective

    calls, denoise = [], GenerativeObjective.denoise
    monkeypatch.setattr(GenerativeObjective, "denoise", lambda self, *a, **k: calls.append(1) or denoise(self, *a, **k))
    sample("--model.objective.init_args.steps", "2")
    euler_calls, calls[:] = len(calls), []
    sample("--model.objective.init_args.steps", "2", "--model.objective.init_args.sampler", "heun")
    assert (euler_calls, len(calls)) == (2, 3)  # Heun: a second network call on every step but the last


def tiny_world(max_bad_steps: int = 0, nan_steps=()) -> WorldModel:
    world = WorldModel(Pixels(), VideoMAE(predictor_dim=32, predictor_depth=1, predictor_heads=2),
                       ViT(dim=32, depth=1, heads=2, patch_size=(2, 8, 8)), max_bad_steps=max_bad_steps, warmup_steps=1)
    step = world.objective.training_step

    def poisoned(model, batch):  # the loss turns NaN at the chosen steps
        out = step(model, batch)
        return out | {"loss": out["loss"] * float("nan")} if model.global_step in nan_steps else out

    world.objective.training_step = poisoned
    return world


def fit(world: WorldModel, root: Path, steps: int = 10) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, callbacks=[
                             ModelCheckpoint(root / "checkpoints", every_n_train_steps=1, save_top_k=-1, save_last=True)])
    data = SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=64, val_size=2)
    trainer.fit(world, datamodule=data)
    return trainer


def test_nan_loss_stops_training_and_keeps_the_last_good_weights(tmp_path):
    world = tiny_world(nan_steps=range(4, 100))
    with pytest.raises(NonFiniteError, match=r"^training stopped at step 4: the loss is nan; the weights are those"):
        fit(world, tmp_path)
    saved = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert saved and all(torch.cat([v.flatten().float() for v in load_checkpoint(p)["state_dict"].values()
                                    if v.is_floating_point()]).isfinite().all() for p in saved)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4  # the state after the last good update ...
    for key, value in world.state_dict().items():  # ... which is what the model still holds
        assert torch.equal(value, last["state_dict"][key]), key


def test_bad_steps_are_skipped_up_to_max_bad_steps(tmp_path):
    world = tiny_world(max_bad_steps=2, nan_steps=(3, 5))
    before = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            before[trainer.global_step] = {k: v.clone() for k, v in module.state_dict().items()}

    trainer = pl.Trainer(max_steps=8, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, callbacks=[Snapshot()])
    trainer.fit(world, datamodule=SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=64))
    assert trainer.global_step == 8 and world.guard.skipped == 2
    skipped_update = before[4]["backbone.blocks.0.attn.qkv.weight"] - before[3]["backbone.blocks.0.attn.qkv.weight"]
    taken_update = before[3]["backbone.blocks.0.attn.qkv.weight"] - before[2]["backbone.blocks.0.attn.qkv.weight"]
    assert skipped_update.abs().max() == 0 and taken_update.abs().max() > 0  # the bad step moved nothing

    with pytest.raises(NonFiniteError, match=r"^training stopped at step 5: the loss is nan \(after skipping 2 bad steps"):
        fit(tiny_world(max_bad_steps=2, nan_steps=range(3, 100)), tmp_path)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_gradients_are_clipped_with_a_fused_optimizer(precision):
    """gradient_clip_val works with fused AdamW in bf16-mixed (Lightning refuses that pair for fp16 only) as in
    fp32: the gradients the optimizer stepped with have at most the clipping norm. The Trainer gets bf16-mixed
    itself, so it runs on every CPU (emulated where bf16 is not native)."""
    norms = []

    class StepNorms(pl.Callback):  # after the step, before the next zero_grad: the gradients it used
        def on_train_batch_end(self, trainer, module, outputs, batch, index):
            norms.append(float(torch.stack(torch._foreach_norm([p.grad for p in module.parameters()
                                                                 if p.grad is not None])).norm()))

    world = tiny_world()
    world.optimizer_factory = lambda groups: torch.optim.AdamW(groups, lr=1e-3, fused=True)
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, precision=precision,
                         gradient_clip_val=1e-3, callbacks=[StepNorms()])
    trainer.fit(world, datamodule=SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=64))
    assert len(norms) == 3 and max(norms) <= 1e-3 * 1.01, norms


def test_fp16_clipping_with_a_fused_optimizer_says_what_to_change():
    """fp16's scaled gradients cannot be clipped before a fused optimizer unscales them (GPUs; on a CPU
    Lightning turns 16-mixed into bf16-mixed, so the test builds fp16 with its gradient scaler itself)."""
    world = tiny_world()
    world.optimizer_factory = lambda groups: torch.optim.AdamW(groups, lr=1e-3, fused=True)
    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, plugins=[fp16], gradient_clip_val=1.0)
    with pytest.raises(PatchworldError, match=r"^trainer.gradient_clip_val 1.0 cannot clip the scaled gradients of "
                                              r"16-mixed with a fused optimizer.*--model.optimizer.init_args.fused false$"):
        trainer.fit(world, datamodule=SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=64))


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_an_interrupted_run_leaves_a_resumable_checkpoint(tmp_path, sent):
    """Stopped before its first validation or checkpoint, the README's main job still leaves last.ckpt."""
    command = [sys.executable, "-m", "patchworld.cli", "fit", "--config", str(RECIPES / "videomae-tiny.yaml"), *MAE_TINY,
               "--trainer.max_steps", "100000", "--trainer.default_root_dir", "run"]
    # stdout too: where `rich` is installed, Lightning prints the model summary there
    # a shell's background job ignores Ctrl-C, and its children inherit that: give the run the default handler
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = ""
    for line in process.stdout:  # wait for training to start, then a little more
        err += line
        if "Total params" in line or "Modules in" in line:
            break
    time.sleep(6)
    process.send_signal(sent)
    err += process.stdout.read()
    assert process.wait(timeout=120) == 130, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("patchworld: interrupted at step ") and "; resume with --ckpt_path " in message, err
    checkpoint = Path(message.split("--ckpt_path ", 1)[1])
    steps = int(message.split("step ", 1)[1].split(";")[0])
    assert steps > 0 and load_checkpoint(tmp_path / checkpoint)["global_step"] == steps
    resumed = subprocess.run(command[:-4] + ["--trainer.max_steps", str(steps + 2), "--trainer.default_root_dir", "run",
                                             "--ckpt_path", "last"], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(find_last(tmp_path / "run"))["global_step"] == steps + 2


def test_integer_batch_limits_stay_integers(tmp_path, monkeypatch):
    from patchworld.cli import PatchworldCLI

    monkeypatch.chdir(tmp_path)
    recipe = str(RECIPES / "videomae-tiny.yaml")
    one = PatchworldCLI(args=["--config", recipe, "--trainer.limit_val_batches", "1", "--trainer.logger", "false"], run=False)
    assert one.trainer.limit_val_batches == 1 and isinstance(one.trainer.limit_val_batches, int)  # one batch
    half = PatchworldCLI(args=["--config", recipe, "--trainer.limit_val_batches", "0.5", "--trainer.logger", "false"],
                         run=False)
    assert half.trainer.limit_val_batches == 0.5  # a fraction
    default = PatchworldCLI(args=["--config", recipe, "--trainer.logger", "false"], run=False)
    assert default.trainer.limit_val_batches == 1.0 and isinstance(default.trainer.limit_val_batches, float)


def test_ckpt_path_last_is_the_newest_run(run_cli, tmp_path, capsys):
    recipe = str(RECIPES / "videomae-tiny.yaml")
    for steps in ("1", "2"):  # version_0, then version_1
        assert run_cli("fit", "--config", recipe, *MAE_TINY, "--trainer.max_steps", steps,
                       "--trainer.default_root_dir", "run") == 0
    newest = find_last(tmp_path / "run")
    assert newest.parts[-3] == "version_1" and load_checkpoint(newest)["global_step"] == 2
    assert run_cli("fit", "--config", recipe, *MAE_TINY, "--trainer.max_steps", "3", "--trainer.default_root_dir",
                   "run", "--ckpt_path", "last") == 0  # resumes from step 2 of version_1
    assert load_checkpoint(find_last(tmp_path / "run"))["global_step"] == 3


def test_a_fast_dev_run_leaves_no_checkpoint_for_ckpt_path_last(run_cli, tmp_path):
    recipe = str(RECIPES / "videomae-tiny.yaml")
    assert run_cli("fit", "--config", recipe, *MAE_TINY, "--trainer.max_steps", "2", "--trainer.default_root_dir", "run") == 0
    real = find_last(tmp_path / "run")
    for root in ("run", "smoke"):  # beside the real run, and alone
        assert run_cli("fit", "--config", recipe, *MAE_TINY, "--trainer.fast_dev_run", "true",
                       "--trainer.default_root_dir", root) == 0
    assert find_last(tmp_path / "run") == real and load_checkpoint(real)["global_step"] == 2
    assert not list((tmp_path / "smoke").rglob("*.ckpt"))


def test_a_run_cut_short_says_so(run_cli, tmp_path, capsys):
    assert run_cli("fit", "--config", str(RECIPES / "videomae-tiny.yaml"), *MAE_TINY, "--trainer.max_steps", "10",
                   "--trainer.max_epochs", "1", "--data.init_args.train_size", "6", "--trainer.default_root_dir",
                   "run") == 0
    assert "patchworld: training ended at step 3 of the 10 planned" in capsys.readouterr().err


def test_a_run_stopped_between_periodic_checkpoints_keeps_its_last_steps(run_cli, tmp_path):
    # checkpoints every 2 steps; the run ends (here by max_epochs, as max_time would) at step 3
    assert run_cli("fit", "--config", str(RECIPES / "videomae-tiny.yaml"), *MAE_TINY, "--trainer.max_steps", "10",
                   "--trainer.max_epochs", "1", "--data.init_args.train_size", "6", "--trainer.default_root_dir",
                   "run", "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_last=true",
                   "--trainer.callbacks.every_n_train_steps=2") == 0
    assert load_checkpoint(find_last(tmp_path / "run"))["global_step"] == 3
