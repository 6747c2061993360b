"""Chapter 1's grader: `patchworld course check 1`. Each test compares a function with the framework's own
(`patchworld.patches`, `patchworld.positions`) and names the mistake it recognises; the last one builds a real
`ViT` on your functions (`adapters.CourseViT`) and trains it one step in a `WorldModel`."""
from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from patchworld import WorldModel, grid_positions, patchify, sincos_3d, unpatchify
from patchworld.course import expect, load_module, train
from patchworld.data import SyntheticWorld
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.videomae import VideoMAE
from patchworld_plugins.vit import ViT

adapters = load_module(Path(__file__).with_name("adapters.py"))

PATCH = (2, 4, 4)
VIDEO = torch.randn(2, 3, 4, 8, 12, generator=torch.Generator().manual_seed(0))  # (B, C, T, H, W): grid (2, 2, 3)


def video_as(order: str, inner: str = "c pt ph pw") -> torch.Tensor:
    """VIDEO patchified with its tokens in `order` and each token's values in `inner` order."""
    return rearrange(VIDEO, f"b c (t pt) (h ph) (w pw) -> b ({order}) ({inner})", pt=2, ph=4, pw=4)


def test_patchify_shape(exercises):
    tokens = exercises.patchify(VIDEO, PATCH)
    assert torch.is_tensor(tokens) and tokens.shape == (2, 12, 96), (
        f"patchify(video (2, 3, 4, 8, 12), patch (2, 4, 4)): expected shape (2, 12, 96), got "
        f"{tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__}; N = (T/pt)(H/ph)(W/pw) = 2*2*3 "
        "tokens of C*pt*ph*pw = 96 values")


def test_patchify_token_order(exercises):
    mistakes = {
        "wrong token order: expected time-major (t, h, w) order, got (h, w, t)": video_as("h w t"),
        "wrong token order: expected time-major (t, h, w) order, got (t, w, h) (columns before rows)": video_as("t w h"),
        "wrong order inside a token: expected (c, pt, ph, pw), got (pt, ph, pw, c) (channels last)":
            video_as("t h w", "pt ph pw c"),
        "the tokens are not patches: reshaping (B, C, T, H, W) straight to (B, N, P) mixes pixels of different "
        "patches; split each axis, permute the grid axes (t, h, w) to the front, then reshape":
            VIDEO.reshape(2, 12, 96),
    }
    expect("patchify", exercises.patchify(VIDEO, PATCH), patchify(VIDEO, PATCH), mistakes=mistakes)


def test_patchify_is_the_patch_embedding(exercises):
    """A Conv3d with kernel = stride = patch is a Linear layer on patchify's tokens (its weights flattened)."""
    conv = torch.nn.Conv3d(3, 8, PATCH, stride=PATCH)
    expected = conv(VIDEO).flatten(2).transpose(1, 2)  # (B, N, 8)
    got = exercises.patchify(VIDEO, PATCH) @ conv.weight.flatten(1).T + conv.bias
    expect("a Conv3d tubelet embedding vs a Linear layer on your tokens", got, expected, atol=1e-4,
           hint="token i must hold exactly the pixels the convolution sees at output cell i, in (c, pt, ph, pw) order")


def test_unpatchify_inverts_patchify(exercises):
    tokens = patchify(VIDEO, PATCH)
    expect("unpatchify(patchify(video))", exercises.unpatchify(tokens, (2, 2, 3), PATCH), VIDEO,
           hint="unpatchify must undo patchify exactly")
    other = torch.randn(1, 2 * 1 * 3, 3 * 1 * 2 * 2)  # a (2, 1, 3) grid of (1, 2, 2) patches
    expect("unpatchify on a (2, 1, 3) grid", exercises.unpatchify(other, (2, 1, 3), (1, 2, 2)),
           unpatchify(other, (2, 1, 3), (1, 2, 2)))


def test_grid_positions(exercises):
    expected = grid_positions(2, 3, 4)  # (24, 3)
    mistakes = {
        "the columns must be (t, h, w); yours are (w, h, t)": expected.flip(-1),
        "wrong row order: expected time-major rows (t varies slowest, w fastest), yours has t varying fastest":
            expected.reshape(2, 3, 4, 3).permute(2, 1, 0, 3).reshape(-1, 3),
    }
    got = exercises.grid_positions(2, 3, 4)
    expect("grid_positions(2, 3, 4)", got, expected, atol=0, mistakes=mistakes)
    assert got.dtype == torch.long, f"grid_positions: expected a long (int64) tensor, got {got.dtype}"
    expect("grid_positions(1, 1, 1)", exercises.grid_positions(1, 1, 1), grid_positions(1, 1, 1), atol=0)


def sincos_variant(positions: torch.Tensor, dim: int, interleave=False, cos_first=False, axes=(0, 1, 2), step=1):
    """sincos_3d with one known mistake switched on."""
    k = dim // 6
    frequencies = 10000.0 ** (-torch.arange(0, step * k, step, dtype=torch.float32) / (step * k))
    parts = []
    for axis in axes:
        angles = positions[..., axis, None].float() * frequencies
        pair = [angles.cos(), angles.sin()] if cos_first else [angles.sin(), angles.cos()]
        parts += [torch.stack(pair, -1).flatten(-2)] if interleave else pair
    return torch.nn.functional.pad(torch.cat(parts, -1), (0, dim - 6 * k))


def test_sincos_3d(exercises):
    positions = grid_positions(3, 4, 5)  # (60, 3)
    for dim in (48, 50):
        mistakes = {
            "sin and cos are interleaved per frequency; put the k sines first, then the k cosines":
                sincos_variant(positions, dim, interleave=True),
            "cos comes before sin; each axis is [sin(p f_0..f_k-1), cos(p f_0..f_k-1)]":
                sincos_variant(positions, dim, cos_first=True),
            "the axes are in (w, h, t) order; concatenate t, then h, then w":
                sincos_variant(positions, dim, axes=(2, 1, 0)),
            "the frequencies decay too fast: f_i = base ** (-i / k) with k = dim // 6":
                sincos_variant(positions, dim, step=2),
        }
        got = exercises.sincos_3d(positions, dim)
        expect(f"sincos_3d(positions, dim={dim})", got, sincos_3d(positions, dim), atol=1e-4, mistakes=mistakes,
               hint="the dim - 6k channels left over stay zero" if dim % 6 else "")


def test_in_the_framework(exercises):
    """A real ViT on your functions computes what the first-party ViT does, on a grid it never saw, and trains
    one step in a WorldModel on SyntheticWorld."""
    torch.manual_seed(0)
    reference = WorldModel(Pixels(), VideoMAE(predictor_dim=32, predictor_depth=1, predictor_heads=2),
                           ViT(dim=48, depth=1, heads=2, patch_size=(2, 8, 8)))
    torch.manual_seed(0)
    world = WorldModel(Pixels(), VideoMAE(predictor_dim=32, predictor_depth=1, predictor_heads=2),
                       adapters.CourseViT(exercises, dim=48, depth=1, heads=2, patch_size=(2, 8, 8)))
    video = torch.rand(1, 3, 6, 24, 40) * 2 - 1  # a (3, 3, 5) token grid
    with torch.no_grad():
        tokens, positions = world.backbone.embed(video)
        expected_tokens, expected_positions = reference.backbone.embed(video)
        expect("CourseViT.embed's tokens (your patchify)", tokens, expected_tokens, atol=1e-4)
        expect("CourseViT.embed's positions (your grid_positions)", positions, expected_positions, atol=0)
        expect("CourseViT's features (your sincos_3d)", world.backbone(tokens, positions),
               reference.backbone(expected_tokens, expected_positions), atol=1e-4)
    data = SyntheticWorld(frames=4, size=(32, 32), batch_size=2, train_size=8)
    losses = train(world, data, steps=1)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all(), f"one training step gave losses {losses}"
