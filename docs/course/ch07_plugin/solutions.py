"""Chapter 7 — writing a plugin with the kit. Reference solutions.

This file is a plugin module, as the one `patchworld new plugin` writes: a component (`CourseBackbone`)
and the hook that registers it. `exercises.py` is the same file with the two functions to write;
`CourseBackbone` itself is given (it is the same in both). `test_grader.py` runs
`patchworld.testing.check_backbone` on it and merges this module with the first-party plugins through
`patchworld.plugins.build_registry`, the function `load_plugins` uses for installed plugins.
"""
from __future__ import annotations

import torch
from torch import nn

import patchworld


class CourseBackbone(patchworld.Backbone):
    """A small pre-norm transformer over spacetime-patch tokens, placed by 3D sin-cos positions.

    Args:
        dim: token width D.
        depth: number of transformer blocks.
        heads: attention heads per block (must divide dim).
        patch_size: spacetime patch (t, h, w) on the tokenizer's latent grid.
    """

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, patch_size: tuple[int, int, int] = (1, 4, 4)):
        super().__init__(dim, patch_size)  # self.dim, self.patch_size; bind() adds the tubelet embedding (embed)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Features (B, N, D) of tokens (B, N, D) at positions (B, N, 3), after `depth` blocks (None: all)."""
        return tiny_forward(self, tokens, positions, depth)


def tiny_forward(backbone: CourseBackbone, tokens: torch.Tensor, positions: torch.Tensor,
                 depth: int | None = None) -> torch.Tensor:
    """The backbone contract's forward for `CourseBackbone`: one feature per token, placed by its position.

    Add the 3D sin-cos encoding of each token's own (t, h, w) position (`patchworld.sincos_3d`, width
    `backbone.dim`, cast to the tokens' dtype), run the first `depth` of `backbone.blocks` (all when None),
    then `backbone.norm`. Never pool over tokens and never use a token's index as its place: masked
    objectives pass any subset of the grid's tokens, in any order.

    Args:
        backbone: the `CourseBackbone` (its `dim`, `blocks` and `norm`).
        tokens: (B, N, D) token embeddings.
        positions: (B, N, 3) integer (t, h, w) of each token.
        depth: how many blocks to run (None: all).

    Returns:
        (B, N, D) features.
    """
    x = tokens + patchworld.sincos_3d(positions, backbone.dim).to(tokens.dtype)  # (B, N, D)
    for block in backbone.blocks[:depth]:
        x = block(x)  # (B, N, D)
    return backbone.norm(x)


@patchworld.hookimpl
def patchworld_register_components() -> list[type]:
    """The plugin's hook: the backbones it contributes (here `CourseBackbone`)."""
    return [CourseBackbone]
