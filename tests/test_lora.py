"""LoRA fine-tuning (plugins/adapters.py): only adapter weights train, their small file reproduces the
fine-tuned model on the base, rank takes effect, bad files and targets are one-line errors, and the CLI
fine-tunes a trained model on a folder of mp4 clips and generates with the adapter."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from safetensors import safe_open

from patchworld import ComponentError, PatchworldError, WorldModel
from patchworld.data import SyntheticWorld
from patchworld.testing import check_help
from patchworld_plugins import DiT, Flow, Pixels, TinyTextEncoder
from patchworld_plugins.adapters import ADAPTER_FILE, LoRA

TINY_DIT = {"dim": 32, "depth": 2, "heads": 2, "patch_size": (1, 4, 4)}


def world(adapter: LoRA | None = None) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(Pixels(), Flow(progress=False), DiT(**TINY_DIT), TinyTextEncoder(dim=32, depth=1, heads=2),
                      adapter=adapter)


@pytest.fixture
def base(tmp_path):
    """A 'trained' base checkpoint: the tiny world with seeded noise on every weight (so no zero-initialised
    gate hides a change), saved as a patchworld checkpoint."""
    model = world()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path / "base.ckpt"
    torch.save({"state_dict": model.state_dict(), "patchworld_clip_frames": 4}, path)
    return path


def outputs(model: WorldModel) -> torch.Tensor:
    """The backbone's prediction on a fixed noisy input and caption, (2, N, patch_values)."""
    generator = torch.Generator().manual_seed(1)
    tokens, positions = model.backbone.embed(torch.randn(2, 3, 4, 16, 16, generator=generator))
    context, mask = model.conditioner(["a large red circle moves to the right slowly", ""])
    with torch.no_grad():
        return model.backbone(tokens, positions, torch.tensor([0.3, 0.8]), context, mask, head=True)


def test_lora_trains_only_adapter_weights_and_its_small_file_reproduces_the_fine_tune(base, tmp_path):
    tuned = world(LoRA(rank=4, base=str(base)))
    base_state = torch.load(base, weights_only=True)["state_dict"]
    assert tuned.clip_frames == 4  # taken from the base checkpoint
    assert torch.equal(outputs(tuned), outputs(world_from(base)))  # B = 0: it starts as the base
    before = {name: p.detach().clone() for name, p in tuned.named_parameters()}
    data = SyntheticWorld(frames=4, size=(16, 16), batch_size=2, max_objects=1, gravity_prob=0.0)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path / "run")
    trainer.fit(tuned, datamodule=data)
    trainer.save_checkpoint(tmp_path / "run" / "last.ckpt")  # the adapter file is written with every checkpoint

    for name, parameter in tuned.named_parameters():
        if ".lora_" in name:
            assert parameter.requires_grad
        else:  # every base weight bit-identical, to the base checkpoint and to before training
            assert not parameter.requires_grad and torch.equal(parameter, before[name]), name
            key = name.replace(".base_layer", "")
            assert torch.equal(parameter, base_state[key]), name
    lora_B = [p for name, p in tuned.named_parameters() if ".lora_B." in name]
    assert lora_B and all(p.abs().max() > 0 for p in lora_B)  # every adapter trained (B started at zero)

    saved = tmp_path / "run" / ADAPTER_FILE
    with safe_open(str(saved), framework="pt") as file:
        keys = list(file.keys())
    assert len(keys) == 2 * len(tuned.adapter.layers) == 2 * 2 * 8  # A and B of 8 layers in each of 2 blocks
    assert all(".lora_A." in key or ".lora_B." in key for key in keys)
    assert saved.stat().st_size < 0.2 * base.stat().st_size

    loaded = world(LoRA(rank=4, base=str(base), weights=str(saved)))
    assert torch.equal(outputs(loaded), outputs(tuned))
    assert not torch.equal(outputs(loaded), outputs(world_from(base)))


def world_from(base) -> WorldModel:
    model = world()
    model.load_state_dict(torch.load(base, weights_only=True)["state_dict"])
    return model


def test_rank_and_targets_set_the_trainable_parameters():
    # r x (in + out) per layer; per block: self- and cross-attention q (32 -> 32), kv (32 -> 64), proj (32 -> 32),
    # MLP fc1 (32 -> 128), fc2 (128 -> 32)
    per_block = 2 * ((32 + 32) + (32 + 64) + (32 + 32)) + (32 + 128) + (128 + 32)
    for rank in (1, 4):
        model = world(LoRA(rank=rank))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == rank * per_block * 2
    only_queries = world(LoRA(rank=2, targets=["cross_attn.q"]))
    assert only_queries.adapter.layers == ["blocks.0.cross_attn.q", "blocks.1.cross_attn.q"]
    assert sum(p.numel() for p in only_queries.parameters() if p.requires_grad) == 2 * 2 * (32 + 32)
    scaled = world(LoRA(rank=2, alpha=8.0))
    assert scaled.backbone.blocks[0].mlp.fc1.scaling["default"] == 4.0  # alpha / rank
    check_help(LoRA)  # what --model.adapter.help LoRA shows


def test_bad_adapter_input_is_one_line(base, tmp_path):
    with pytest.raises(ComponentError, match=r"LoRA targets \['nope'\] match no linear layer of backbone DiT; its "
                                             r"linear layers: time_embed.0, .*blocks.\*.self_attn.\*.q, .*blocks.\*.mlp.fc2"):
        world(LoRA(targets=["nope"]))
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(PatchworldError, match=f"'{missing}' does not exist"):
        world(LoRA(base=str(base), weights=str(missing)))
    with pytest.raises(PatchworldError, match=r"'.*base.ckpt' are not a .safetensors file"):
        world(LoRA(weights=str(base)))
    tuned = world(LoRA(rank=4))
    saved = tuned.adapter.save(tuned, tmp_path / ADAPTER_FILE)
    with pytest.raises(PatchworldError, match=r"were trained with rank 4, this adapter has 2"):
        world(LoRA(rank=2, weights=str(saved)))
    from safetensors.torch import save_file
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PatchworldError, match=r"'.*other.safetensors' are not LoRA adapter weights"):
        world(LoRA(weights=str(tmp_path / "other.safetensors")))
    with pytest.raises(PatchworldError, match=r"LoRA base checkpoint '.*nothing.ckpt' does not exist"):
        world(LoRA(base=str(tmp_path / "nothing.ckpt")))


TINY = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "32",
        "--model.conditioner.init_args.depth", "1", "--trainer.precision", "32-true", "--trainer.max_time", "null",
        "--trainer.limit_val_batches", "0", "--trainer.logger", "false"]


def test_cli_fine_tunes_a_trained_model_on_mp4_clips_and_predicts_with_the_adapter(run_cli, recipe_path, tmp_path,
                                                                                   make_mp4):
    sora = recipe_path("sora-tiny")
    assert run_cli("fit", "--config", sora, *TINY, "--trainer.max_steps", "2", "--data.init_args.batch_size", "2",
                   "--data.init_args.frames", "4", "--data.init_args.size", "[16, 16]",
                   "--trainer.default_root_dir", "base") == 0
    checkpoint = next((tmp_path / "base").rglob("last.ckpt"))
    for i in range(4):
        make_mp4(tmp_path / "clips" / f"clip{i}.mp4", frames=6, height=32, width=32, seed=i)
        (tmp_path / "clips" / f"clip{i}.txt").write_text("a large orange circle moves to the right slowly")
    lora = ["--model.adapter", "LoRA", "--model.adapter.rank", "2", "--model.adapter.base", str(checkpoint)]
    assert run_cli("fit", "--config", sora, *TINY, *lora, "--trainer.max_steps", "2", "--data", "VideoFolder",
                   "--data.root", "clips", "--data.frames", "4", "--data.size", "[16, 16]", "--data.batch_size", "2",
                   "--trainer.default_root_dir", "tuned") == 0
    adapter = tmp_path / "tuned" / ADAPTER_FILE
    with safe_open(str(adapter), framework="pt") as file:
        assert len(list(file.keys())) == 2 * 8  # A and B of the 8 attention and MLP layers of the one block
    predict = ["predict", "--config", sora, *TINY, *lora, "--model.adapter.weights", str(adapter),
               "--trainer.default_root_dir", "tuned", "--model.objective.init_args.steps", "2", "--data", "Prompts",
               "--data.prompts", '["a large orange circle moves to the right slowly"]', "--data.frames", "4",
               "--data.size", "[16, 16]"]
    assert run_cli(*predict) == 0
    assert len(list((tmp_path / "tuned" / "predictions").glob("*.mp4"))) == 1
    bad = [arg if arg != str(adapter) else str(tmp_path / "nope.safetensors") for arg in predict]
    assert run_cli(*bad) == 2
