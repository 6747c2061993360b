"""The parts' contracts checked at run time (patchworld.contracts): on each stage's first batch and every
objective step, one line naming the component and the rule; the generative backbone contract at build time."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from patchworld import ContractError, WorldModel
from patchworld.contracts import check_parts
from patchworld_plugins import DiT, Flow, Pixels, VideoMAE, VideoWriter, ViT
from patchworld.data import SyntheticWorld
from test_testing_kit import Bars, Bytes, Good, Narrow, Regression, Shrinking

FAST = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]


def tiny_world(backbone=None, tokenizer=None, objective=None, decoder=None) -> WorldModel:
    return WorldModel(tokenizer or Pixels(), objective or VideoMAE(predictor_dim=16, predictor_depth=1, predictor_heads=2),
                      backbone or Good(), decoder=decoder)


def trainer(**options) -> pl.Trainer:
    return pl.Trainer(**{"max_steps": 1, "limit_val_batches": 1, "logger": False, "enable_checkpointing": False,
                         "enable_progress_bar": False, "enable_model_summary": False} | options)


def data() -> SyntheticWorld:
    return SyntheticWorld(frames=2, size=(16, 16), batch_size=2, train_size=4, val_size=2, predict_size=2)


def test_a_backbone_returning_one_vector_per_clip_stops_the_first_step_with_one_line(run_cli, capsys, recipe_path):
    assert run_cli("fit", "--config", recipe_path("videomae-tiny"), "--model.backbone", "test_testing_kit.Pooled",
                   *FAST) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("patchworld: error:")]
    assert lines == ["patchworld: error: backbone Pooled breaks the rule 'forward(tokens (B, N, D), positions) returns "
                     "features (B, N, dim), one per token': got shape (2, 192), expected (2, 512, 192); keep the token axis "
                     "(pool in a probe or a decoder, not in the backbone) and return width `dim`"]


@pytest.mark.parametrize("world,match", [
    (lambda: tiny_world(Narrow()), r"^backbone Narrow breaks the rule 'forward\(tokens \(B, N, D\), positions\) returns "
                                   r"features \(B, N, dim\), one per token': got shape \(2, 32, 8\), expected \(2, 32, 32\)"),
    (lambda: tiny_world(tokenizer=Shrinking()), r"^tokenizer Shrinking breaks the rule 'encode\(video \(B, 3, T, H, W\)\) "
                                                r"returns latents .*got shape \(2, 3, 2, 16, 16\), expected \(2, 3, 2, 8, 8\)"),
    (lambda: tiny_world(objective=type("Unreduced", (Regression,), {
        "training_step": lambda self, world, batch: {"loss": self.loss(world, batch)}})()),
     r"^objective Unreduced breaks the rule 'training_step returns a dict with 'loss', a 0-dim floating tensor"),
    (lambda: tiny_world(objective=type("Forgetful", (Regression,), {"prepare_batch": lambda self, batch: None})()),
     r"^objective Forgetful breaks the rule 'prepare_batch returns a dict': got None; return the batch"),
])
def test_the_first_batch_names_the_component_and_the_rule(world, match):
    with pytest.raises(ContractError, match=match):
        trainer(num_sanity_val_steps=0).fit(world(), data())


def test_a_datamodule_batch_out_of_range_is_named():
    with pytest.raises(ContractError, match=r"^datamodule Bytes breaks the rule 'batch\['video'\] is \(B, 3, T, H, W\) "
                                            r"floating in \[-1, 1\]': its values span \[-255, 255\]; scale 8-bit"):
        trainer().fit(WorldModel(Pixels(), Regression(), Good(patch_size=(1, 2, 2))), Bytes())
    trainer().fit(WorldModel(Pixels(), Regression(), Good(patch_size=(1, 2, 2))), Bars())


def test_each_stage_is_checked_once_on_its_first_batch(tmp_path):
    world = tiny_world(ViT(dim=32, depth=1, heads=2, patch_size=(1, 4, 4)), decoder=VideoWriter(strip_frames=0))
    run = trainer(max_steps=2, default_root_dir=tmp_path)
    run.fit(world, data())
    run.predict(world, data())
    assert world._checked_stages == {"val", "train", "predict"}


def test_a_decoder_that_returns_nothing_is_named(tmp_path):
    class Quiet(VideoWriter):
        def write(self, outputs, batch, directory, batch_index):
            super().write(outputs, batch, directory, batch_index)

    with pytest.raises(ContractError, match=r"^decoder Quiet breaks the rule 'write returns the list of the files it "
                                            r"wrote, under `directory`': got None"):
        trainer(default_root_dir=tmp_path).predict(tiny_world(decoder=Quiet(strip_frames=0)), data())


def test_the_first_batch_check_draws_nothing_and_restores_every_mode():
    world = tiny_world(ViT(dim=32, depth=1, heads=2, patch_size=(1, 4, 4), drop_path=0.5))
    world.objective.eval()  # a part in eval mode stays so
    batch = {"video": torch.rand(2, 3, 2, 16, 16) * 2 - 1, "caption": ["a", "b"], "index": torch.tensor([0, 1])}
    state = torch.get_rng_state()
    check_parts(world, batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert world.training and world.backbone.training and not world.objective.training


class NoHead(DiT):
    """A DiT whose forward lost the `head` keyword."""

    def forward(self, tokens, positions, timesteps=None, context=None, context_mask=None, clean=None, depth=None):
        return super().forward(tokens, positions, timesteps, context, context_mask, clean, depth)


def test_generative_objectives_need_the_generative_backbone_contract():
    with pytest.raises(ContractError, match=r"^backbone ViT breaks the rule 'Flow needs a patchworld.GenerativeBackbone': "
                                            r"it has no patch_values; use DiT, or implement"):
        WorldModel(Pixels(), Flow(), ViT(dim=32, depth=1, heads=2))
    with pytest.raises(ContractError, match=r"^backbone NoHead breaks the rule 'Flow needs a patchworld.GenerativeBackbone': "
                                            r"forward\(\) got an unexpected keyword argument 'head'"):
        WorldModel(Pixels(), Flow(), NoHead(dim=32, depth=1, heads=2))
    with pytest.raises(ContractError, match=r"^objective Flow breaks the rule 'Flow needs a patchworld.GenerativeBackbone': "
                                            r"the recipe has no backbone"):
        WorldModel(Pixels(), Flow())
    assert isinstance(WorldModel(Pixels(), Flow(), DiT(dim=32, depth=1, heads=2)).backbone, nn.Module)
