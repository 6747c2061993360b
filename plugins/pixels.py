"""`Pixels`: the identity tokenizer — the latent grid is the video itself."""
import torch

from patchworld import Tokenizer


class Pixels(Tokenizer):
    """Latents are pixels: (B, 3, T, H, W) both ways, no compression."""

    latent_channels = 3
    compression = (1, 1, 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video  # (B, 3, T, H, W)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents  # (B, 3, T, H, W)
