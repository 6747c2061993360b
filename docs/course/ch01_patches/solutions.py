"""Chapter 1 reference solutions: videos as tensors, spacetime patches and 3D positions."""
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
    B, C, T, H, W = video.shape
    pt, ph, pw = patch
    x = video.reshape(B, C, T // pt, pt, H // ph, ph, W // pw, pw)  # (B, C, t, pt, h, ph, w, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, ph, pw)
    return x.reshape(B, (T // pt) * (H // ph) * (W // pw), C * pt * ph * pw)  # (B, N, C*pt*ph*pw)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Put tokens back together into a video: the inverse of `patchify`.

    Args:
        tokens: (B, N, C*pt*ph*pw) in `patchify`'s order, N = t*h*w.
        grid: (t, h, w), the token grid.
        patch: (pt, ph, pw).

    Returns:
        video (B, C, t*pt, h*ph, w*pw).
    """
    B = tokens.shape[0]
    t, h, w = grid
    pt, ph, pw = patch
    C = tokens.shape[2] // (pt * ph * pw)
    x = tokens.reshape(B, t, h, w, C, pt, ph, pw)  # (B, t, h, w, C, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, t, pt, h, ph, w, pw)
    return x.reshape(B, C, t * pt, h * ph, w * pw)


def grid_positions(t: int, h: int, w: int) -> torch.Tensor:
    """The integer (t, h, w) coordinates of every cell of a t x h x w token grid, in `patchify`'s order.

    Returns:
        positions (t*h*w, 3) long: row i is the (t, h, w) of token i, e.g. for (2, 1, 2):
        [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]].
    """
    axes = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")  # 3 x (t, h, w)
    return torch.stack(axes, dim=-1).reshape(-1, 3)  # (t*h*w, 3)


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
    k = dim // 6
    frequencies = base ** (-torch.arange(k, dtype=torch.float32) / k)  # (k,)
    parts = []
    for axis in range(3):
        angles = positions[..., axis, None].float() * frequencies  # (..., k)
        parts += [angles.sin(), angles.cos()]
    features = torch.cat(parts, dim=-1)  # (..., 6k)
    return torch.nn.functional.pad(features, (0, dim - 6 * k))  # (..., dim)
