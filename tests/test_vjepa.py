"""V-JEPA: multi-block masks, context isolation, EMA, collapse monitoring, SIGReg, features and probes."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from patchworld import WorldModel, gather_tokens
from patchworld.data.synthetic import SyntheticWorld
from patchworld.evaluation.features import FeatureSet, extract_features
from patchworld.evaluation.probes import linear_probe
from patchworld_plugins.masks import LONG_RANGE, SHORT_RANGE, MaskFamily, block_size, multiblock_mask, spatial_block_mask
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vit import ViT
from patchworld_plugins.vjepa import VJEPA, CollapseMonitor, effective_rank, sigreg


def tiny_world(**objective) -> WorldModel:
    torch.manual_seed(0)
    options = dict(predictor_dim=32, predictor_depth=1, predictor_heads=2, monitor_every=4) | objective
    return WorldModel(Pixels(), VJEPA(**options), backbone=ViT(dim=32, depth=2, heads=2, patch_size=(2, 8, 8)),
                      optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.05), warmup_steps=1)


def tiny_video(batch: int = 4, frames: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---- masks ------------------------------------------------------------------------------------------
def test_block_sizes_follow_scale_and_aspect_ratio():
    generator = torch.Generator().manual_seed(0)
    for family in (SHORT_RANGE, LONG_RANGE):
        for _ in range(200):
            bh, bw = block_size(family, 14, 14, generator)
            assert abs(bh * bw / 196 - family.scale) < 0.06  # rounding to whole cells
            assert 0.75 * 0.8 <= bh / bw <= 1.5 * 1.25  # the range, up to rounding


@pytest.mark.parametrize("grid", [(4, 8, 8), (2, 6, 10)])
def test_mask_family_coverage_and_overall_ratio(grid):
    t, h, w = grid
    generator = torch.Generator().manual_seed(0)
    short = spatial_block_mask(500, h, w, SHORT_RANGE, generator).flatten(1).float().mean(1)
    long = spatial_block_mask(500, h, w, LONG_RANGE, generator).flatten(1).float().mean(1)
    # documented bounds (docs/vjepa.md): short-range union ~0.55-0.75 of the frame, long-range ~0.75-0.92
    assert 0.55 <= short.mean() <= 0.75, short.mean()
    assert 0.75 <= long.mean() <= 0.92, long.mean()
    assert 0.65 <= (short.mean() + long.mean()) / 2 <= 0.82
    assert long.mean() > short.mean() + 0.1


def test_masks_are_tubes_disjoint_equal_counts_and_unbiased():
    grid = (4, 8, 8)
    t, h, w = grid
    generator = torch.Generator().manual_seed(0)
    kept_rows, all_rows = [], []
    for family in (SHORT_RANGE, LONG_RANGE):
        for _ in range(20):
            mask = multiblock_mask(16, grid, family, generator)
            assert mask.context.shape[0] == mask.target.shape[0] == 16  # one count per batch
            for context, target in zip(mask.context, mask.target):
                assert not set(context.tolist()) & set(target.tolist())
                for indices in (context, target):
                    frames = indices.view(t, -1)  # time-major: the same cells in every frame
                    cells = frames % (h * w)
                    assert (frames // (h * w) == torch.arange(t)[:, None]).all()
                    assert (cells == cells[0]).all()
            kept_rows.append((mask.target[:, : mask.target.shape[1] // t] // w).float().mean())
        covered = spatial_block_mask(2000, h, w, family, generator)
        all_rows.append(covered.nonzero()[:, 1].float().mean())
    # random subsampling keeps target rows centred like the full masks (truncation would favour the top)
    assert abs(torch.stack(kept_rows).mean() - torch.stack(all_rows).mean()) < 0.25


def test_fully_covered_frame_keeps_one_context_cell():
    mask = multiblock_mask(8, (2, 3, 3), MaskFamily(blocks=4, scale=1.0), torch.Generator().manual_seed(0))
    assert mask.context.shape == (8, 2) and mask.target.shape == (8, 16)


# ---- context isolation and EMA ----------------------------------------------------------------------
def test_context_encoder_never_sees_masked_tokens():
    world = tiny_world()
    video = tiny_video()
    batch = world.objective.prepare_batch({"video": video}, torch.Generator().manual_seed(0))
    seen = []
    original = world.backbone.forward
    world.backbone.forward = lambda tokens, positions, **kw: seen.append(positions) or original(tokens, positions, **kw)
    latents = world.tokenizer.encode(video)
    _, positions = world.backbone.embed(latents)
    predictions = [p for p, _, _ in world.objective.masked_predictions(world, latents, batch["masks"])]
    assert len(seen) == 2  # one context pass per family; the EMA target is a separate module
    for passed, mask in zip(seen, batch["masks"]):
        assert torch.equal(passed, gather_tokens(positions, mask.context))
    # behaviour: rewriting every masked tubelet's pixels changes no prediction
    changed = video.clone()
    for family, mask in enumerate(batch["masks"]):
        cells = (mask.target % 16)  # spatial cells of a 4x4 grid of 8x8 patches
        for b in range(video.shape[0]):
            for cell in cells[b].unique().tolist():
                r, c = divmod(cell, 4)
                changed[b, :, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = torch.rand(3, 4, 8, 8)
        again = dict(enumerate(world.objective.masked_predictions(world, world.tokenizer.encode(changed), [mask])))
        assert torch.allclose(again[0][0], predictions[family], atol=1e-5)
        changed = video.clone()


def test_ema_update_math_and_schedule():
    world = tiny_world(ema=(0.998, 1.0))
    objective = world.objective
    assert objective.momentum_at(0) == pytest.approx(0.998) and objective.momentum_at(1) == 1.0
    assert objective.momentum_at(0.5) == pytest.approx(0.999)
    with torch.no_grad():
        for p in world.backbone.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in objective.target_encoder.parameters()]
    online = [p.clone() for p in world.backbone.parameters()]
    objective.update_target(world, 0.9)
    for new, old, source in zip(objective.target_encoder.parameters(), before, online):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * source)
    frozen = [p.clone() for p in objective.target_encoder.parameters()]
    objective.on_train_batch_end(world, progress=1.0)  # momentum 1: the target stops moving
    assert all(torch.equal(a, b) for a, b in zip(frozen, objective.target_encoder.parameters()))
    # no gradient reaches the target encoder; the context encoder and predictor get one
    world.objective.training_step(world, {"video": tiny_video()})["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in objective.target_encoder.parameters())
    assert world.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert objective.predictor.mask_token.grad.abs().sum() > 0


def test_features_come_from_the_target_encoder():
    world = tiny_world()
    video = tiny_video(2)
    tokens, positions = world.features(video)
    assert tokens.shape == (2, 32, 32) and positions.shape == (2, 32, 3)
    with torch.no_grad():
        for p in world.backbone.parameters():
            p.add_(1.0)
    assert torch.equal(world.features(video)[0], tokens)  # the online encoder does not matter
    with torch.no_grad():
        world.objective.target_encoder.patch_embed.proj.weight.add_(1.0)
    assert not torch.allclose(world.features(video)[0], tokens)
    assert torch.equal(world.predict_step({"video": video}, 0)["tokens"], world.features(video)[0])


def test_predictive_surprise_is_a_curve_over_time_deterministic_per_clip_and_causal():
    world = tiny_world()
    video = tiny_video(3, frames=8)
    first, second = world.surprise(video, context=4), world.surprise(video, context=4)
    assert first.shape == (3, 8) and torch.equal(first.nan_to_num(), second.nan_to_num())
    assert first[:, :4].isnan().all() and not first[:, 4:].isnan().any()  # one value per future tubelet
    torch.testing.assert_close(first[:, 4], first[:, 5])  # a tubelet's two frames share its error
    alone = world.surprise(video[1:2], context=4)
    torch.testing.assert_close(alone[0, 4:], first[1, 4:], atol=1e-5, rtol=1e-4)  # independent of the batch
    # the window ending at frame 6 sees frames 2..5 as context: changing frame 0 leaves it unchanged,
    # changing its future frames 6-7 changes only the target side
    changed = video.clone()
    changed[:, :, 0] = -changed[:, :, 0]
    after = world.surprise(changed, context=4)
    torch.testing.assert_close(after[:, 6:], first[:, 6:])
    assert not torch.allclose(after[:, 4], first[:, 4])


# ---- collapse monitoring ----------------------------------------------------------------------------
def test_monitor_statistics():
    assert effective_rank(torch.ones(8, 16)) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0, rel=1e-3)
    monitor = CollapseMonitor()
    assert monitor.check(0, {"target_std": 0.5, "effective_rank": 3.0, "cosine_similarity": 0.9, "predictor_std": 0.1}) == []
    raised = monitor.check(1, {"target_std": 0.01, "effective_rank": 1.0, "cosine_similarity": 1.0, "predictor_std": 0.1})
    assert {name for _, name, _ in raised} == {"target_std", "effective_rank", "cosine_similarity"}


def fit_tiny(anti_collapse: str, steps: int = 9) -> CollapseMonitor:
    world = tiny_world(anti_collapse=anti_collapse)
    trainer = pl.Trainer(max_steps=steps, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(world, SyntheticWorld(frames=4, size=(32, 32), batch_size=8, train_size=steps * 8))
    return world.objective.collapse_monitor


def test_collapse_monitor_fires_on_a_collapsing_run_and_not_on_a_normal_one():
    # target = the context encoder itself, momentum 0, no stop-gradient: the loss is minimised by
    # mapping everything to one vector
    with pytest.warns(RuntimeWarning, match="REPRESENTATION COLLAPSE"):
        collapsing = fit_tiny("none")
    assert {name for _, name, _ in collapsing.alarms} >= {"effective_rank", "cosine_similarity"}
    assert fit_tiny("ema").alarms == []


# ---- SIGReg -----------------------------------------------------------------------------------------
def test_sigreg_prefers_gaussian_features_and_trains():
    generator = torch.Generator().manual_seed(0)
    gaussian = torch.randn(512, 32, generator=generator)
    collapsed = torch.ones(512, 32) + 0.01 * torch.randn(512, 32, generator=generator)
    assert sigreg(gaussian, generator=generator) * 10 < sigreg(collapsed, generator=generator)
    world = tiny_world(anti_collapse="sigreg")
    assert world.objective.target_encoder is None
    out = world.objective.training_step(world, {"video": tiny_video()})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["sigreg"] > 0
    assert world.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


# ---- probes -----------------------------------------------------------------------------------------
def test_linear_probe_and_feature_extraction():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (300,), generator=generator)
    centres = torch.randn(4, 16, generator=generator) * 3
    features = centres[labels] + torch.randn(300, 16, generator=generator)
    train = FeatureSet(features[:200], {"direction": labels[:200]})
    test = FeatureSet(features[200:], {"direction": labels[200:]})
    result = linear_probe(train, test, "direction", steps=100)
    assert result.test_accuracy > 0.9 and result.classes == 4
    noise = FeatureSet(torch.randn(100, 16, generator=generator), {"direction": labels[200:]})
    assert linear_probe(train, noise, "direction", steps=100).test_accuracy < 0.5
    with pytest.raises(KeyError, match="shape"):
        linear_probe(train, test, "shape")
    world = tiny_world()
    data = SyntheticWorld(frames=4, size=(32, 32), batch_size=4, val_size=8)
    extracted = extract_features(world, data.val_dataloader(), keep_tokens=True)
    assert extracted.pooled.shape == (8, 32) and extracted.tokens.shape == (8, 32, 32)
    assert set(extracted.labels) >= {"direction", "shape"} and extracted.labels["direction"].shape == (8,)


def test_load_world_loads_a_checkpoint_and_names_a_mismatch(tmp_path):
    from patchworld import PatchworldError
    from patchworld.recipes import load_world

    shallow = ["--model.backbone.init_args.depth", "1"]
    model, data = load_world("vjepa-tiny", None, shallow)
    path = tmp_path / "shallow.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    again, _ = load_world("vjepa-tiny", path, shallow)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(PatchworldError, match=r"does not fit recipe 'vjepa-tiny': it has no weight 'backbone.blocks.1.norm1.weight'"):
        load_world("vjepa-tiny", path)  # the recipe's depth is 4
    with pytest.raises(PatchworldError, match="does not exist"):
        load_world("vjepa-tiny", tmp_path / "missing.ckpt")


def test_cli_fast_dev_run(run_cli, recipe_path, tmp_path):
    assert run_cli("fit", "--config", recipe_path("vjepa-tiny"), "--trainer.fast_dev_run", "true",
                   "--data.init_args.batch_size", "4", "--trainer.enable_progress_bar", "false") == 0
