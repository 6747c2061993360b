"""Core utilities: patches, positions, tokenizer size rules, the learning-rate schedule, WorldModel."""
import math

import pytest
import torch

from patchworld import DataError, Rope3d, Tokenizer, grid_positions, patchify, sincos_3d, unpatchify
from patchworld.model import warmup_cosine
from patchworld.patches import PatchEmbed3d, gather_tokens


@pytest.mark.parametrize("shape,patch", [((2, 3, 4, 16, 24), (2, 8, 8)), ((1, 4, 1, 8, 8), (1, 4, 4)), ((3, 2, 6, 6, 9), (3, 2, 3))])
def test_patchify_roundtrip_and_order(shape, patch):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    grid = tuple(n // p for n, p in zip(shape[2:], patch))
    assert tokens.shape == (shape[0], math.prod(grid), shape[1] * math.prod(patch))
    assert torch.equal(unpatchify(tokens, grid, patch), x)
    # token k holds the patch at grid_positions()[k] (time-major order)
    t, h, w = grid_positions(*grid)[-1].tolist()
    corner = x[:, :, t * patch[0], h * patch[1], w * patch[2]]
    assert torch.equal(tokens[:, -1].reshape(shape[0], shape[1], -1)[:, :, 0], corner)


def test_patchify_rejects_sizes_that_do_not_fit():
    with pytest.raises(DataError, match=r"H=10 is not a multiple of 8"):
        patchify(torch.zeros(1, 3, 4, 10, 16), (2, 8, 8))


def test_patch_embed_any_grid_and_positions():
    embed = PatchEmbed3d(3, 12, (2, 4, 4))
    for t, h, w in [(2, 8, 8), (6, 12, 20), (4, 4, 32)]:
        tokens, positions = embed(torch.randn(2, 3, t, h, w))
        grid = (t // 2, h // 4, w // 4)
        assert tokens.shape == (2, math.prod(grid), 12)
        assert positions.shape == (2, math.prod(grid), 3)
        assert positions[0, -1].tolist() == [g - 1 for g in grid]


def test_gather_tokens_selects_per_sample():
    x = torch.arange(2 * 5 * 3).reshape(2, 5, 3)
    index = torch.tensor([[4, 0], [1, 3]])
    assert gather_tokens(x, index).tolist() == [[x[0, 4].tolist(), x[0, 0].tolist()], [x[1, 1].tolist(), x[1, 3].tolist()]]


def test_sincos_distinguishes_every_position_of_unseen_large_grids():
    positions = grid_positions(7, 33, 45)
    features = sincos_3d(positions, 96)
    assert features.shape == (7 * 33 * 45, 96)
    assert torch.unique(features.round(decimals=4), dim=0).shape[0] == positions.shape[0]
    # a position means the same thing whatever the grid it comes from
    assert torch.allclose(sincos_3d(torch.tensor([[3, 5, 7]]), 96), features[(3 * 33 + 5) * 45 + 7 : (3 * 33 + 5) * 45 + 8])


def test_rope_scores_depend_only_on_relative_position():
    rope = Rope3d(head_dim=24)
    q, k = torch.randn(1, 1, 1, 24), torch.randn(1, 1, 1, 24)

    def score(pos_q, pos_k):
        angles = rope.angles(torch.tensor([[pos_q, pos_k]]))
        rotated_q = rope(q.expand(1, 1, 2, 24), angles)[:, :, 0]
        rotated_k = rope(k.expand(1, 1, 2, 24), angles)[:, :, 1]
        return (rotated_q * rotated_k).sum()

    assert torch.allclose(score([1, 2, 3], [4, 0, 5]), score([11, 12, 13], [14, 10, 15]), atol=1e-4)
    assert not torch.allclose(score([1, 2, 3], [4, 0, 5]), score([1, 2, 3], [4, 1, 5]), atol=1e-3)
    # rotation preserves norms
    angles = rope.angles(torch.tensor([[[5, 6, 7]]]).reshape(1, 1, 3))
    assert torch.allclose(rope(q, angles).norm(), q.norm(), atol=1e-5)


class Causal(Tokenizer):
    compression, causal = (4, 8, 8), True


def test_tokenizer_size_rules_state_the_valid_sizes():
    assert Causal().latent_grid(17, 64, 32) == (5, 8, 4)
    assert Causal().latent_grid(1, 8, 8) == (1, 1, 1)
    with pytest.raises(DataError, match=r"T = 1 \+ k\*4 \(1, 5, 9, \.\.\.\), H a multiple of 8"):
        Causal().latent_grid(16, 64, 64)
    assert Causal().pixel_frames(5) == 17 and Causal().latent_frame_of(0) == 0 and Causal().latent_frame_of(5) == 2


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, float("inf"), 10, 0.1) == 1.0
