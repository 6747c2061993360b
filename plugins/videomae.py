"""`VideoMAE`: masked autoencoding of tubelets — the pixel-prediction baseline.

Tube masking hides the same ~90% of spatial positions in every frame; the encoder sees only the
visible tubelets; a narrow predictor regresses the (per-tubelet normalised) latent values of the
masked ones with MSE.
"""
from __future__ import annotations

import math

import torch

from patchworld import ComponentError, Objective, gather_tokens, patchify, split_past_future
from patchworld.randomness import Generators, draw, sample_generators
from patchworld.errors import require_positive

from .vit import TokenPredictor


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, device=None,
              generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample tube masks on a (t, h, w) token grid: the same spatial cells hidden in every frame.

    Returns (visible, masked) token indices, (B, t*keep) and (B, t*(h*w - keep)), keep = round((1-ratio)*h*w)
    (at least 1 visible and 1 masked cell), both sorted in token order. `generator`: one for the batch or
    one per sample (`patchworld.randomness`).
    """
    t, h, w = grid
    cells = h * w
    keep = min(cells - 1, max(1, round((1 - ratio) * cells)))
    order = draw(torch.rand, generator, batch, cells).to(device).argsort(dim=1)  # (B, h*w)
    frame_offsets = torch.arange(t, device=device).view(1, t, 1) * cells

    def tubes(spatial: torch.Tensor) -> torch.Tensor:  # (B, k) spatial cells -> (B, t*k) token indices
        return (spatial.sort(dim=1).values.unsqueeze(1) + frame_offsets).flatten(1)

    return tubes(order[:, :keep]), tubes(order[:, keep:])


class VideoMAE(Objective):
    """Masked tubelet autoencoding with a narrow predictor.

    Args:
        mask_ratio: fraction of spatial cells hidden (as tubes through all time).
        predictor_dim: width of the narrow predictor (the "decoder").
        predictor_depth: transformer blocks of the predictor.
        predictor_heads: attention heads of the predictor.
        normalize_targets: regress each tubelet's values normalised by its own mean and std.
    """

    def __init__(self, mask_ratio: float = 0.9, predictor_dim: int = 128, predictor_depth: int = 2,
                 predictor_heads: int = 4, normalize_targets: bool = True):
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ComponentError(f"VideoMAE.mask_ratio must be in (0, 1), got {mask_ratio}")
        require_positive("VideoMAE", predictor_dim=predictor_dim, predictor_depth=predictor_depth,
                         predictor_heads=predictor_heads)
        self.mask_ratio, self.normalize_targets = mask_ratio, normalize_targets
        self.predictor_dim, self.predictor_depth, self.predictor_heads = predictor_dim, predictor_depth, predictor_heads

    def bind(self, world) -> None:
        patch_values = world.tokenizer.latent_channels * math.prod(world.backbone.patch_size)
        self.predictor = TokenPredictor(world.backbone.dim, self.predictor_dim, self.predictor_depth,
                                        self.predictor_heads, patch_values)

    def masked_errors(self, world, video: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Per-sample mean squared error on the masked tubelets, (B,)."""
        latents = world.tokenizer.encode(video)  # (B, c, t, h, w)
        tokens, positions = world.backbone.embed(latents)  # (B, N, D), (B, N, 3)
        grid = world.backbone.patch_embed.grid(latents)
        visible, masked = tube_mask(video.shape[0], grid, self.mask_ratio, video.device, generator)
        return self.reconstruction_error(world, latents, tokens, positions, visible, masked)

    def reconstruction_error(self, world, latents: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor,
                             visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Per-sample MSE (B,) of the predictor's reconstruction of the `masked` tubelets (B, Nm) from the
        encoder's features of the `visible` ones (B, Nv)."""
        features = world.backbone(gather_tokens(tokens, visible), gather_tokens(positions, visible))  # (B, Nv, D)
        prediction = self.predictor(features, gather_tokens(positions, visible), gather_tokens(positions, masked))
        target = gather_tokens(patchify(latents, world.backbone.patch_size), masked).float()  # (B, Nm, P)
        if self.normalize_targets:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return (prediction.float() - target).pow(2).mean(dim=(1, 2))

    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        masks = sample_generators(world, batch, "tube_mask")  # keyed on (run seed, step, sample)
        return {"loss": self.masked_errors(world, batch["video"], masks).mean()}

    def future_error(self, world, window: torch.Tensor, past: int) -> torch.Tensor:
        """Mean squared error (B,) of reconstructing the tubelets of the frames from `past` on (all masked)
        from the encoder's features of the frames before them (all visible)."""
        latents = world.tokenizer.encode(window)  # (B, c, t, h, w)
        tokens, positions = world.backbone.embed(latents)  # (B, N, D), (B, N, 3)
        visible, masked = split_past_future(world, positions, past)
        return self.reconstruction_error(world, latents, tokens, positions, visible, masked)
