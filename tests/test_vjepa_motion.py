"""V-JEPA's future mask (`future_frames`, `block_masks`): shape, ratio, causality, and that it trains."""
from __future__ import annotations

import pytest
import torch

from patchworld import ComponentError, DataError, WorldModel
from patchworld_plugins.masks import future_mask, future_token_frames
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vit import ViT
from patchworld_plugins.vjepa import VJEPA


def tiny_world(patch=(2, 4, 4), **objective) -> WorldModel:
    torch.manual_seed(0)
    options = dict(predictor_dim=32, predictor_depth=1, predictor_heads=2, monitor_every=0) | objective
    return WorldModel(Pixels(), VJEPA(**options), backbone=ViT(dim=32, depth=2, heads=2, patch_size=patch),
                      optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.05), warmup_steps=1)


def tiny_video(batch: int = 4, frames: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("future, frames, hidden", [(2, 4, 2), (1, 4, 1), (0.5, 8, 4), (0.25, 4, 1),
                                                    (0.01, 4, 1), (9, 4, 3), (0.99, 4, 3)])
def test_future_token_frames_counts_or_fractions_clipped(future, frames, hidden):
    assert future_token_frames(future, frames) == hidden


def test_future_token_frames_rejects_nonsense():
    with pytest.raises(ComponentError, match="future_frames must be > 0"):
        future_token_frames(0, 4)
    with pytest.raises(DataError, match="at least 2 token frames"):
        future_token_frames(1, 1)  # no frame left for the context


@pytest.mark.parametrize("grid, future", [((4, 8, 8), 2), ((4, 4, 4), 0.25), ((8, 8, 8), 0.5)])
def test_future_mask_hides_the_last_token_frames(grid, future):
    t, h, w = grid
    k = future_token_frames(future, t)
    mask = future_mask(3, grid, future)
    assert mask.context.shape == (3, (t - k) * h * w) and mask.target.shape == (3, k * h * w)
    assert mask.target.shape[1] / (t * h * w) == pytest.approx(k / t)  # the documented ratio
    frame_of = lambda index: index // (h * w)  # tokens are time-major
    assert frame_of(mask.context).max() < t - k <= frame_of(mask.target).min()  # past -> future, nothing shared
    assert torch.equal(torch.cat([mask.context, mask.target], 1), torch.arange(t * h * w).expand(3, -1))


def test_prepare_batch_adds_the_future_family_and_can_drop_the_blocks():
    video = tiny_video()  # 8 x 16 x 16 with 2x4x4 patches: a (4, 4, 4) token grid
    default = tiny_world().objective.prepare_batch({"video": video}, torch.Generator().manual_seed(0))["masks"]
    assert len(default) == 2  # unchanged default: short- and long-range only
    both = tiny_world(future_frames=2).objective.prepare_batch({"video": video}, torch.Generator().manual_seed(0))["masks"]
    assert len(both) == 3 and torch.equal(both[0].target, default[0].target)  # the block families are the same draws
    only = tiny_world(future_frames=0.5, block_masks=False).objective.prepare_batch({"video": video})["masks"]
    assert len(only) == 1 and only[0].target.shape == (4, 2 * 16)
    with pytest.raises(ComponentError, match="needs future_frames"):
        VJEPA(block_masks=False)
    with pytest.raises(ComponentError, match="future_frames must be > 0"):
        VJEPA(future_frames=-1)


def test_future_predictions_never_see_the_future():
    world = tiny_world(future_frames=2, block_masks=False)
    video = tiny_video()
    masks = world.objective.prepare_batch({"video": video})["masks"]
    latents = world.tokenizer.encode(video)
    (before, _, _), = world.objective.masked_predictions(world, latents, masks)
    changed = video.clone()
    changed[:, :, 4:] = torch.rand_like(changed[:, :, 4:])  # rewrite the last 2 token frames (4 video frames)
    (after, _, _), = world.objective.masked_predictions(world, world.tokenizer.encode(changed), masks)
    assert torch.allclose(before, after, atol=1e-5)
    changed = video.clone()
    changed[:, :, :2] = torch.rand_like(changed[:, :, :2])  # the past does change them
    (moved, _, _), = world.objective.masked_predictions(world, world.tokenizer.encode(changed), masks)
    assert not torch.allclose(before, moved, atol=1e-4)


def test_future_mask_trains():
    world = tiny_world(future_frames=2)
    optimizer = torch.optim.AdamW(list(world.backbone.parameters()) + list(world.objective.predictor.parameters()), 1e-2)
    video = tiny_video(batch=8)
    losses = []
    for _ in range(30):
        batch = world.objective.prepare_batch({"video": video}, torch.Generator().manual_seed(0))
        loss = world.objective.training_step(world, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        world.objective.on_train_batch_end(world, 0.5)
        losses.append(float(loss))
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0]


def test_context_loss_adds_a_distance_weighted_term_on_the_visible_tokens():
    video = tiny_video()
    losses = {}
    for weight in (0.0, 0.2, 0.4):
        world = tiny_world(future_frames=1, block_masks=False, context_loss=weight)
        masks = world.objective.prepare_batch({"video": video})["masks"]
        losses[weight] = world.objective.losses(world, video, masks)["per_sample"]  # (B,)
    extra = losses[0.2] - losses[0.0]
    assert (extra > 0).all()  # the visible tokens are now predicted too, and never perfectly at init
    assert torch.allclose(losses[0.4] - losses[0.0], 2 * extra, atol=1e-5)  # linear in its weight
    # the term by hand: 1 future token frame of 2x4x4 tubelets on 8x16x16 -> context rows 0-2, target row 3
    world = tiny_world(future_frames=1, block_masks=False, context_loss=1.0)
    mask = world.objective.prepare_batch({"video": video})["masks"][0]
    latents = world.tokenizer.encode(video)
    target, _ = world.objective.target_features(world, latents)
    normed = torch.nn.functional.layer_norm(target, target.shape[-1:])
    (_, _, (context, at_context, _, _)), = world.objective.masked_predictions(world, latents, [mask])
    rows = torch.arange(3).repeat_interleave(16)  # token frame of each context token; distance to row 3
    by_hand = ((at_context - normed[:, :48]).abs().mean(-1) / (3 - rows).float().sqrt()).mean(-1)
    assert torch.allclose(world.objective.losses(world, video, [mask])["per_sample"] - losses[0.0], by_hand, atol=1e-5)
    with pytest.raises(ComponentError, match="context_loss must be >= 0"):
        VJEPA(context_loss=-1)


def test_the_share_of_random_init_left_in_the_ema_target_is_logged_before_a_short_run(monkeypatch):
    from types import SimpleNamespace

    import patchworld_plugins.vjepa as vjepa
    from patchworld_plugins.vjepa import TargetInitShare
    slow, fast = VJEPA(ema=(0.998, 1.0)), VJEPA(ema=(0.99, 0.999))
    assert slow.init_share(730) == pytest.approx(0.481, abs=0.002)  # compare-tiny's V-JEPA budget
    assert slow.init_share(1500) == pytest.approx(0.223, abs=0.002)  # the vjepa-tiny recipe
    assert fast.init_share(730) < 0.02 and VJEPA(ema=(1.0, 1.0)).init_share(10) == 1.0
    printed = []
    monkeypatch.setattr(vjepa, "rank_zero_info", printed.append)  # Lightning's rank-zero console line
    for objective, steps, logged in ((slow, 730, True), (fast, 730, False), (slow, 100_000, False)):
        printed.clear()
        check = TargetInitShare()
        check.on_fit_start(SimpleNamespace(estimated_stepping_batches=steps), SimpleNamespace(objective=objective))
        assert check.share == pytest.approx(objective.init_share(steps))
        assert len(printed) == logged
    check.on_fit_start(SimpleNamespace(estimated_stepping_batches=730), SimpleNamespace(objective=slow))
    assert "over 730 steps" in printed[-1] and "will keep 48% of its random initialisation" in printed[-1]
    assert any(isinstance(c, TargetInitShare) for c in slow.callbacks())
    assert not any(isinstance(c, TargetInitShare) for c in VJEPA(anti_collapse="sigreg").callbacks())
