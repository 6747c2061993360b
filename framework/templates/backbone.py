"""`MyBackbone`: residual depthwise 3D-convolution token mixing over spacetime patches (a ConvMixer).

Tokens are scattered onto their (t, h, w) grid by position, mixed there by a depthwise 3D convolution and
gathered back, then each goes through an MLP: any grid size, any subset of tokens (masking) and any token
order work, because a token's place comes from its position, never from its index.
"""
from __future__ import annotations

import torch
from torch import nn

import patchworld


class MyBackbone(patchworld.Backbone):
    """Residual depthwise 3D-convolution token mixing (a ConvMixer over spacetime patches).

    Args:
        dim: token width D.
        depth: number of mixing blocks.
        kernel: size of the depthwise 3D convolution over the token grid (odd).
        patch_size: spacetime patch (t, h, w) on the tokenizer's latent grid.
    """

    def __init__(self, dim: int = 64, depth: int = 2, kernel: int = 3, patch_size: tuple[int, int, int] = (1, 4, 4)):
        super().__init__(dim, patch_size)  # self.dim, self.patch_size; bind() adds the tubelet embedding (embed)
        if kernel % 2 == 0:
            raise patchworld.ComponentError(f"MyBackbone.kernel must be odd, got {kernel}")
        self.blocks = nn.ModuleList(MixingBlock(dim, kernel) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Features (B, N, D) of tokens (B, N, D) at integer positions (B, N, 3), after `depth` blocks (None: all)."""
        x = tokens + patchworld.sincos_3d(positions, self.dim).to(tokens.dtype)  # (B, N, D)
        for block in self.blocks[:depth]:
            x = block(x, positions)  # (B, N, D)
        return self.norm(x)


class MixingBlock(nn.Module):
    """x + depthwise conv over the token grid, then x + MLP, each after a LayerNorm."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.mix_norm, self.mlp_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mix = nn.Conv3d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # x: (B, N, D) at positions (B, N, 3)
        x = x + on_grid(self.mix, self.mix_norm(x), positions)  # (B, N, D)
        return x + self.mlp(self.mlp_norm(x))  # (B, N, D)


def on_grid(layer: nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Apply a (B, D, t, h, w) -> (B, D, t, h, w) layer to tokens x (B, N, D) at positions (B, N, 3): scatter
    them onto the smallest grid that holds every position (empty cells are zero), apply, gather them back."""
    B, N, D = x.shape
    t, h, w = (int(positions[..., axis].max()) + 1 for axis in range(3))
    cell = ((positions[..., 0] * h + positions[..., 1]) * w + positions[..., 2])[..., None].expand(-1, -1, D)  # (B, N, D)
    grid = x.new_zeros(B, t * h * w, D).scatter(1, cell, x)  # (B, t*h*w, D)
    grid = layer(grid.transpose(1, 2).reshape(B, D, t, h, w))  # (B, D, t, h, w)
    return grid.flatten(2).transpose(1, 2).gather(1, cell)  # (B, N, D)
