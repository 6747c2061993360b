"""Chapter 1 exercises: videos as tensors, spacetime patches and 3D positions.

Fill in each function (replace the `raise NotImplementedError`), then grade your work:
    patchworld course check 1
Every function keeps the signature and the shapes its docstring gives; docs/course/ch01_patches/README.md
explains the ideas, and the framework's own versions live in framework/patches.py and framework/positions.py
(read them after you tried)."""
from __future__ import annotations

import torch


def patchify(video: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Cut a video into spacetime patches and flatten each into one token.

    Args:
        video: (B, C, T, H, W), with T, H, W multiples of the patch size.
        patch: (pt, ph, pw), the patch size in frames, rows and columns.

    Returns:
        tokens (B, N, C*pt*ph*pw), N = (T/pt)(H/ph)(W/pw). Tokens are in time-major order: all the patches of
        the first pt frames row by row (t, then h, then w); the values inside a token are ordered (c, pt, ph, pw).
    """
    raise NotImplementedError(
        'reshape to (B, C, t, pt, h, ph, w, pw), permute the grid axes (t, h, w) before the in-patch '
        'axes (C, pt, ph, pw), reshape to (B, N, C*pt*ph*pw)'
    )


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Put tokens back together into a video: the inverse of `patchify`.

    Args:
        tokens: (B, N, C*pt*ph*pw) in `patchify`'s order, N = t*h*w.
        grid: (t, h, w), the token grid.
        patch: (pt, ph, pw).

    Returns:
        video (B, C, t*pt, h*ph, w*pw).
    """
    raise NotImplementedError(
        "undo patchify's steps in reverse: reshape to (B, t, h, w, C, pt, ph, pw), permute back, "
        'reshape'
    )


def grid_positions(t: int, h: int, w: int) -> torch.Tensor:
    """The integer (t, h, w) coordinates of every cell of a t x h x w token grid, in `patchify`'s order.

    Returns:
        positions (t*h*w, 3) long: row i is the (t, h, w) of token i, e.g. for (2, 1, 2):
        [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]].
    """
    raise NotImplementedError(
        "torch.meshgrid of three torch.arange with indexing='ij', stacked on a last axis and reshaped"
        ' to (-1, 3)'
    )


def sincos_3d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Fixed 3D sin-cos position features, one vector per (t, h, w) position.

    Each axis gets k = dim // 6 frequencies f_i = base ** (-i / k), i = 0 .. k-1, and 2k channels: the k
    values sin(p * f_i), then the k values cos(p * f_i), p being the position's coordinate on that axis. The
    three axes' channels are concatenated in the order t, h, w (6k channels), and the dim - 6k channels left
    over are zero.

    Args:
        positions: (..., 3) integer (t, h, w) coordinates.
        dim: the feature width, at least 6.
        base: the longest wavelength's scale.

    Returns:
        features (..., dim) float32.
    """
    raise NotImplementedError(
        'frequencies base ** (-arange(k) / k) with k = dim // 6; per axis cat([sin(p f), cos(p f)]); '
        'cat the axes t, h, w; zero-pad to dim'
    )
