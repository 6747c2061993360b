"""`--model.ema`: the checkpoint's weights are the warmed-up exponential moving average of the raw weights, which
predict and every loader use; the raw weights travel beside them for resuming (exactness: test_resume.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from patchworld import ComponentError, WorldModel
from patchworld.averaging import warmed_up_decay
from patchworld.checkpoints import find_last, load_checkpoint
from patchworld.recipes import load_world
from patchworld.data import SyntheticWorld
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.videomae import VideoMAE
from patchworld_plugins.vit import ViT

MAE_TINY = ["--model.backbone.init_args.depth", "1", "--model.backbone.init_args.dim", "32",
            "--model.backbone.init_args.heads", "2", "--data.init_args.batch_size", "2", "--data.init_args.size",
            "[32, 32]", "--data.init_args.frames", "4", "--data.init_args.predict_size", "2",
            "--trainer.enable_progress_bar", "false"]


def test_the_checkpoint_holds_the_warmed_up_average_and_the_raw_weights(tmp_path):
    world = WorldModel(Pixels(), VideoMAE(predictor_dim=32, predictor_depth=1, predictor_heads=2),
                       ViT(dim=32, depth=1, heads=2, patch_size=(2, 8, 8)), warmup_steps=1, ema=0.5)
    raw = []

    class RawWeights(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            raw.append({name: p.detach().clone() for name, p in module.named_parameters()})

    trainer = pl.Trainer(max_steps=6, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[RawWeights()])
    trainer.fit(world, datamodule=SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=64))
    saved = load_checkpoint(next(tmp_path.rglob("*.ckpt")))
    name = "backbone.blocks.0.attn.qkv.weight"
    average = raw[0][name]
    for updates, weights in enumerate(raw[1:], start=1):  # decay 2/11, 3/12, ...: warming up to 0.5 (at 8)
        decay = warmed_up_decay(0.5, updates)
        average = decay * average + (1 - decay) * weights[name]
    assert [warmed_up_decay(0.5, n) for n in (1, 3, 10)] == [2 / 11, 4 / 13, 0.5]
    assert torch.allclose(saved["state_dict"][name], average, atol=1e-6)
    assert torch.equal(saved["current_model_state"][name], raw[-1][name])
    assert (average - raw[-1][name]).abs().max() > 1e-4  # the two differ, so the checks above could fail
    assert torch.allclose(dict(world.named_parameters())[name], average, atol=1e-6)  # after fit: the average
    with pytest.raises(ComponentError, match=r"WorldModel.ema must be a decay in \(0, 1\)"):
        WorldModel(Pixels(), VideoMAE(), ViT(dim=32, depth=1, heads=2), ema=1.0)


def test_predict_and_load_world_use_the_average(run_cli, tmp_path):
    assert run_cli("fit", "--config", "videomae-tiny", *MAE_TINY, "--trainer.max_steps", "4", "--model.ema", "0.5",
                   "--trainer.default_root_dir", "run") == 0
    checkpoint = find_last(tmp_path / "run")
    saved = load_checkpoint(checkpoint)
    model, _ = load_world("videomae-tiny", checkpoint, overrides=MAE_TINY[:6])
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    name = "backbone.blocks.0.mlp.fc1.weight"
    assert not torch.equal(saved["state_dict"][name], saved["current_model_state"][name])
    predict = subprocess.run([sys.executable, "-m", "patchworld.cli", "predict", "--config", "videomae-tiny", *MAE_TINY,
                              "--model.ema", "0.5", "--trainer.default_root_dir", "run", "--ckpt_path", "last"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert "WeightAveraging" not in predict.stderr  # no averaging at predict: the checkpoint already holds it
