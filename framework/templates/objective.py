"""`MyObjective`: denoising autoencoding of spacetime patches, the smallest honest objective: the backbone
sees noised latent patches and a linear head predicts the clean ones (mean squared error)."""
from __future__ import annotations

import math

import torch
from torch import nn

import patchworld
from patchworld.randomness import draw, sample_generators


class MyObjective(patchworld.Objective):
    """Denoising autoencoder: predict clean latent patches from noised ones.

    Args:
        noise: standard deviation of the Gaussian noise added to the latents.
    """

    def __init__(self, noise: float = 0.5):
        super().__init__()
        if noise <= 0:
            raise patchworld.ComponentError(f"MyObjective.noise must be positive, got {noise}")
        self.noise = noise

    def bind(self, world) -> None:
        # called once the tokenizer and backbone are bound: size the head from them
        patch_values = world.tokenizer.latent_channels * math.prod(world.backbone.patch_size)
        self.head = nn.Linear(world.backbone.dim, patch_values)

    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        latents = world.tokenizer.encode(batch["video"])  # (B, c, t, h, w)
        # keyed on (run seed, step, clip): resumed and DDP runs draw the same noise (patchworld.randomness)
        noise = draw(torch.randn, sample_generators(world, batch, "noise"), *latents.shape).to(latents)
        tokens, positions = world.backbone.embed(latents + self.noise * noise)  # (B, N, D), (B, N, 3)
        prediction = self.head(world.backbone(tokens, positions))  # (B, N, c*pt*ph*pw)
        target = patchworld.patchify(latents, world.backbone.patch_size)  # (B, N, c*pt*ph*pw)
        return {"loss": (prediction.float() - target.float()).pow(2).mean()}
