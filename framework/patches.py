"""Spacetime patches: (B, C, T, H, W) grids <-> (B, N, C*pt*ph*pw) tokens with integer (t, h, w) positions.

Tokens are ordered time-major (t, then h, then w), the order `einops` gives and every backbone assumes.
Positions are always computed from the grid, so any grid size works.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .errors import ComponentError, DataError

Size3 = tuple[int, int, int]


def as_size3(value: int | tuple[int, ...] | list[int], what: str = "size") -> Size3:
    """`2` -> (2, 2, 2); `[1, 8, 8]` -> (1, 8, 8); anything else (another length, a size below 1) is a
    `ComponentError` naming `what` (e.g. ``ViT.patch_size``)."""
    size = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(size) != 3 or any(int(v) < 1 for v in size):
        raise ComponentError(f"{what} must be an int or three ints (t, h, w), each >= 1; got {value!r}")
    return tuple(int(v) for v in size)  # type: ignore[return-value]


def grid_positions(t: int, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer (t, h, w) coordinates of every cell of a t x h x w grid, time-major: (t*h*w, 3) long."""
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def check_divisible(shape: Size3, patch: Size3, what: str = "latent grid") -> None:
    """Raise a DataError naming the valid sizes when `shape` (t, h, w) is not a multiple of `patch`."""
    bad = [(name, n, p) for name, n, p in zip("THW", shape, patch) if n % p]
    if bad:
        detail = ", ".join(f"{name}={n} is not a multiple of {p}" for name, n, p in bad)
        raise DataError(f"{what} of size (T, H, W)={tuple(shape)} does not fit patch size {tuple(patch)}: {detail}")


def patchify(x: torch.Tensor, patch: Size3) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, C*pt*ph*pw) with N = (T/pt)(H/ph)(W/pw), time-major."""
    check_divisible(tuple(x.shape[2:]), patch)
    pt, ph, pw = patch
    return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, grid: Size3, patch: Size3) -> torch.Tensor:
    """(B, N, C*pt*ph*pw) on a (t, h, w) grid -> (B, C, t*pt, h*ph, w*pw); inverse of `patchify`."""
    pt, ph, pw = patch
    t, h, w = grid
    return rearrange(tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: a Conv3d whose kernel and stride are the patch size."""

    def __init__(self, in_channels: int, dim: int, patch: Size3):
        super().__init__()
        self.patch = as_size3(patch)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.patch, stride=self.patch)

    def grid(self, x: torch.Tensor) -> Size3:
        """The token grid (t, h, w) for a (B, C, T, H, W) input, checking divisibility."""
        check_divisible(tuple(x.shape[2:]), self.patch)
        return tuple(n // p for n, p in zip(x.shape[2:], self.patch))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, C, T, H, W)
        t, h, w = self.grid(x)
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), N = t*h*w
        positions = grid_positions(t, h, w, x.device).expand(x.shape[0], -1, -1)  # (B, N, 3)
        return tokens, positions


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: x (B, N, ...) and index (B, K) long -> (B, K, ...)."""
    expand = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expand)
