"""Grader for chapter 5: your masks, EMA update and collapse statistics against the real V-JEPA code
(`plugins/masks.py`, `plugins/vjepa.py`), and your masks and EMA update inside the real objective."""
from __future__ import annotations

import copy

import pytest
import torch

from patchworld import WorldModel
from patchworld_plugins import masks, vjepa
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vit import ViT

GRID = (4, 8, 8)  # token frames, rows, columns
FAMILIES = {"short-range": masks.SHORT_RANGE, "long-range": masks.LONG_RANGE}


def student_masks(exercises, family: masks.MaskFamily, seed: int, batch: int = 16, grid=GRID):
    """Your (context, target) for one family, drawn from a seeded generator, checked to be long tensors."""
    out = exercises.multiblock_mask(batch, grid, family.blocks, family.scale, family.aspect_ratio,
                                    torch.Generator().manual_seed(seed))
    assert isinstance(out, tuple) and len(out) == 2, "multiblock_mask must return a tuple (context, target)"
    context, target = out
    for name, x in (("context", context), ("target", target)):
        assert torch.is_tensor(x) and x.dtype == torch.long and x.dim() == 2 and x.shape[0] == batch, (
            f"{name} must be a (B, N) long tensor of token indices with B={batch}; got "
            f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__} {getattr(x, 'dtype', '')}")
    return context, target


def tiny_world(seed: int = 0) -> WorldModel:
    """A real V-JEPA world: Pixels -> ViT (2x8x8 tubelets) -> VJEPA with its EMA target encoder."""
    torch.manual_seed(seed)
    return WorldModel(tokenizer=Pixels(), backbone=ViT(dim=32, depth=1, heads=2, patch_size=(2, 8, 8)),
                      objective=vjepa.VJEPA(predictor_dim=16, predictor_depth=1, predictor_heads=2))


def test_multiblock_mask_gives_sorted_disjoint_tubes(exercises):
    t, h, w = GRID
    for name, family in FAMILIES.items():
        context, target = student_masks(exercises, family, seed=1)
        for row, (c, g) in enumerate(zip(context, target)):
            assert len(c) and len(g), f"{name}: clip {row} has an empty context or target; every clip needs both"
            assert bool((c.diff() > 0).all() and (g.diff() > 0).all()), (
                f"{name}: the indices of clip {row} are not sorted increasing (or repeat); sort each row")
            assert 0 <= int(min(c.min(), g.min())) and int(max(c.max(), g.max())) < t * h * w, (
                f"{name}: indices outside 0..{t * h * w - 1} for a {GRID} token grid")
            assert not set(c.tolist()) & set(g.tolist()), (
                f"{name}: clip {row} has tokens that are both context and target; the context must never "
                "show a target")
            for indices, what in ((c, "context"), (g, "target")):
                cells = indices.view(t, -1) % (h * w)  # a tube: the same cells in every token frame
                assert len(indices) % t == 0 and bool((cells == cells[:1]).all()), (
                    f"{name}: the {what} of clip {row} is not a tube; a spatial cell must be kept in every token "
                    "frame (token f * h * w + c for each frame f)")
                assert bool((indices.view(t, -1) // (h * w) == torch.arange(t)[:, None]).all()), (
                    f"{name}: the {what} of clip {row} is not time-major (frame 0's cells first)")
        assert not bool((target == target[:1]).all()), f"{name}: every clip got the same target; draw blocks per clip"


def test_multiblock_mask_hides_as_much_as_vjepa(exercises):
    t, h, w = GRID
    for name, family in FAMILIES.items():
        yours = [student_masks(exercises, family, seed=s)[1].shape[1] / (t * h * w) for s in range(30)]
        real = [masks.multiblock_mask(16, GRID, family, torch.Generator().manual_seed(100 + s)).target.shape[1]
                / (t * h * w) for s in range(30)]
        mean_yours, mean_real = sum(yours) / len(yours), sum(real) / len(real)
        assert abs(mean_yours - mean_real) < 0.06, (
            f"{name} ({family.blocks} blocks x {family.scale}): your target covers {mean_yours:.2f} of the tokens "
            f"on average, V-JEPA's masks {mean_real:.2f}; check the block size (bh * bw ~ scale * h * w, aspect "
            "log-uniform) and that the target is the union of the blocks, cut to the batch's smallest count")


def test_multiblock_mask_favours_no_region(exercises):
    t, h, w = GRID
    rows, cols = [], []
    for s in range(30):
        _, target = student_masks(exercises, masks.SHORT_RANGE, seed=s)
        cells = target % (h * w)
        rows.append((cells // w).float().mean())
        cols.append((cells % w).float().mean())
    row, col = float(torch.stack(rows).mean()), float(torch.stack(cols).mean())
    centre = (h - 1) / 2
    assert abs(row - centre) < 0.3 and abs(col - (w - 1) / 2) < 0.3, (
        f"the kept target cells sit on average at row {row:.2f}, column {col:.2f}; the frame's centre is "
        f"({centre:.1f}, {(w - 1) / 2:.1f}). Cutting every clip to the smallest count must keep a *uniformly random* "
        "subset, not the first k sorted indices (that always drops the bottom-right cells)")


def test_multiblock_mask_draws_from_the_generator(exercises):
    a = student_masks(exercises, masks.SHORT_RANGE, seed=7)
    torch.manual_seed(123)  # the global RNG must not matter
    b = student_masks(exercises, masks.SHORT_RANGE, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b)), (
        "the same generator seed gave different masks; draw every random number with generator=generator")
    c = student_masks(exercises, masks.SHORT_RANGE, seed=8)
    assert not torch.equal(a[1], c[1]), "two generator seeds gave the same masks; use the generator you are given"


def test_multiblock_mask_trains_the_real_vjepa(exercises):
    world = tiny_world()
    video = torch.rand(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grid = world.objective.token_grid(video)  # (2, 4, 4)
    batch = {"video": video, "masks": [masks.BlockMask(*exercises.multiblock_mask(
        4, grid, family.blocks, family.scale, family.aspect_ratio, torch.Generator().manual_seed(k)))
        for k, family in enumerate(FAMILIES.values())]}
    out = world.objective.training_step(world, batch)
    loss = out["loss"]
    assert torch.isfinite(loss), f"one VJEPA step with your masks gave a non-finite loss {float(loss)}"
    loss.backward()
    grads = [p.grad for p in world.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), (
        "with your masks the context encoder got no (or non-finite) gradient from the VJEPA loss")


def test_ema_update_follows_the_formula_in_place(exercises):
    g = torch.Generator().manual_seed(0)
    online = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    for momentum in (0.0, 0.9, 1.0):
        target = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        objects, before, online_before = [id(x) for x in target], [x.clone() for x in target], [x.clone() for x in online]
        exercises.ema_update(target, online, momentum)
        assert [id(x) for x in target] == objects, "ema_update must change the given tensors in place"
        for t, b, o in zip(target, before, online):
            expected = momentum * b + (1 - momentum) * o
            assert torch.allclose(t, expected, atol=1e-6), (
                f"at momentum {momentum} the target should be momentum * target + (1 - momentum) * online; "
                f"it is off by {float((t - expected).abs().max()):.3g} (momentum 1 keeps the target, 0 copies online)")
        assert all(torch.equal(o, b) for o, b in zip(online, online_before)), "ema_update must not change the online encoder"


def test_ema_update_moves_the_real_target_encoder(exercises):
    world = tiny_world()
    with torch.no_grad():
        for p in world.backbone.parameters():  # the online encoder has trained away from the target
            p.add_(torch.randn_like(p) * 0.1)
    yours, real = copy.deepcopy(world), copy.deepcopy(world)
    exercises.ema_update(list(yours.objective.target_encoder.parameters()), list(yours.backbone.parameters()), 0.99)
    real.objective.update_target(real, 0.99)
    for (name, a), b in zip(yours.objective.target_encoder.named_parameters(), real.objective.target_encoder.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (
            f"after your EMA update the target encoder's {name} differs from VJEPA.update_target's by "
            f"{float((a - b).abs().max()):.3g}")


def test_feature_std_matches_the_vjepa_monitor(exercises):
    features = torch.randn(4, 10, 6, generator=torch.Generator().manual_seed(0)) * torch.arange(1.0, 7.0)
    value = exercises.feature_std(features)
    assert torch.is_tensor(value) and value.dim() == 0, "feature_std must return a 0-dim tensor"
    expected = vjepa.per_dim_std(features)
    assert torch.allclose(value, expected, atol=1e-5), (
        f"feature_std gave {float(value):.4f}, the V-JEPA monitor {float(expected):.4f}: take the std of each channel "
        "over every token of every clip (reshape to (rows, D)), then average over channels")
    collapsed = torch.ones(4, 10, 6) * torch.randn(6)
    assert float(exercises.feature_std(collapsed)) < 1e-6, "identical feature vectors must give a std of 0 (collapse)"


def test_effective_rank_matches_the_vjepa_monitor(exercises):
    features = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    value = exercises.effective_rank(features)
    assert torch.is_tensor(value) and value.dim() == 0, "effective_rank must return a 0-dim tensor"
    expected = vjepa.effective_rank(features)
    assert torch.allclose(value, expected, atol=1e-4), (
        f"effective_rank gave {float(value):.3f}, RankMe {float(expected):.3f}: normalise the singular values to sum "
        "to 1 and return exp of their entropy")
    one_direction = torch.randn(16, 1) * torch.randn(1, 8)  # rank 1
    assert float(exercises.effective_rank(one_direction)) == pytest.approx(1.0, abs=0.01), (
        "features along one direction must have an effective rank of 1")
    assert float(exercises.effective_rank(torch.eye(8))) == pytest.approx(8.0, abs=0.01), (
        "8 orthonormal rows must have an effective rank of 8")
