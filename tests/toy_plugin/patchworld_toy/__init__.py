"""A third-party patchworld plugin: the `TokenMLP` backbone and a recipe that uses it."""
from pathlib import Path

import torch
from torch import nn

import patchworld


class TokenMLP(patchworld.Backbone):
    """Per-token MLP blocks with mean-token mixing: a deliberately simple non-attention backbone.

    Args:
        dim: token width.
        depth: number of MLP blocks.
        patch_size: tubelet size (t, h, w) on the tokenizer's latent grid.
    """

    def __init__(self, dim: int = 64, depth: int = 2, patch_size: tuple[int, int, int] = (2, 8, 8)):
        super().__init__(dim, patch_size)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            for _ in range(depth)
        )

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        x = tokens + patchworld.sincos_3d(positions, self.dim).to(tokens.dtype)  # (B, N, D)
        for block in self.blocks[:depth]:
            x = x + block(x + x.mean(dim=1, keepdim=True))  # (B, N, D)
        return x


@patchworld.hookimpl
def patchworld_register_components():
    return [TokenMLP]


@patchworld.hookimpl
def patchworld_register_recipe_dirs():
    return [str(Path(__file__).parent / "recipes")]
