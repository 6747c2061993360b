"""`MyTokenizer`: space-to-depth, each f x f block of pixels becomes 3 f^2 latent channels (no weights,
exactly invertible): a laptop-sized stand-in for a learned video compression network."""
from __future__ import annotations

import torch
from einops import rearrange

import patchworld


class MyTokenizer(patchworld.Tokenizer):
    """Space-to-depth: (B, 3, T, H, W) <-> (B, 3 f^2, T, H/f, W/f), no weights, exactly invertible.

    Args:
        factor: spatial compression f; H and W must be multiples of it.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise patchworld.ComponentError(f"MyTokenizer.factor must be at least 1, got {factor}")
        self.factor = factor
        self.latent_channels = 3 * factor**2  # c
        self.compression = (1, factor, factor)  # (temporal, height, width); not causal: T = any

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.latent_grid(*video.shape[2:])  # a DataError naming the valid sizes
        f = self.factor
        return rearrange(video, "b c t (h fh) (w fw) -> b (c fh fw) t h w", fh=f, fw=f)  # (B, 3 f^2, T, H/f, W/f)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return rearrange(latents, "b (c fh fw) t h w -> b c t (h fh) (w fw)", fh=f, fw=f)  # (B, 3, T, H, W)
