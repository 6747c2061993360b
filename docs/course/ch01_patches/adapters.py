"""Chapter 1's functions plugged into a real component: `CourseViT`, the first-party `ViT` whose tubelet
embedding, positions and position features are the student's `patchify`, `grid_positions` and `sincos_3d`
(used by the grader and by run.py)."""
from __future__ import annotations

import math
from types import ModuleType

import torch
from torch import nn

from patchworld_plugins.vit import ViT


class CourseViT(ViT):
    """A `ViT` built on the chapter's functions.

    Its Conv3d tubelet embedding (kernel = stride = patch) is replaced by the same weights as a Linear layer
    on `patchify`'s tokens, its positions come from `grid_positions` and its position features from
    `sincos_3d`; with correct functions it computes exactly what the first-party `ViT` does.

    Args:
        functions: the module with the chapter's functions (exercises.py or solutions.py).
        **kwargs: `ViT`'s arguments (dim, depth, heads, patch_size, ...).
    """

    def __init__(self, functions: ModuleType, **kwargs):
        super().__init__(**kwargs)
        # the functions themselves (a module object would not survive the deep copies Lightning makes)
        self.patchify, self.grid_positions = functions.patchify, functions.grid_positions
        self.sincos_3d = functions.sincos_3d

    def bind(self, world) -> None:
        super().bind(world)  # builds the Conv3d patch embedding from the tokenizer's channels
        conv = self.patch_embed.proj
        self.proj = nn.Linear(self.in_channels * math.prod(self.patch_size), self.dim)
        with torch.no_grad():  # (D, C, pt, ph, pw) -> (D, C*pt*ph*pw): the values in (c, pt, ph, pw) order
            self.proj.weight.copy_(conv.weight.flatten(1))
            self.proj.bias.copy_(conv.bias)
        self.patch_embed.proj = None  # the Linear layer replaces it; patch_embed.grid still sizes the grid

    def embed(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # latents: (B, c, t, h, w)
        grid = self.patch_embed.grid(latents)  # (t/pt, h/ph, w/pw), checking divisibility
        tokens = self.proj(self.patchify(latents, self.patch_size))  # (B, N, D)
        positions = self.grid_positions(*grid).to(latents.device)  # (N, 3)
        return tokens, positions.expand(latents.shape[0], -1, -1)  # (B, N, 3)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        # tokens: (B, N, D) at positions (B, N, 3)
        x = tokens + self.sincos_3d(positions, self.dim).to(tokens.dtype)  # (B, N, D)
        for block in self.blocks[:depth]:
            x = block(x)  # (B, N, D)
        return self.norm(x)
