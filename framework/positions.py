"""3D position encodings computed from integer (t, h, w) positions, so any grid size works.

* `sincos_3d` — fixed sin-cos features added to tokens (ViT / V-JEPA style).
* `Rope3d` — rotary embeddings applied to queries and keys inside attention (DiT style).
Both split the channels into three equal groups, one per axis.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import ComponentError


def _axis_frequencies(channels: int, base: float, device) -> torch.Tensor:
    """`channels // 2` inverse frequencies base^(-i / (channels/2))."""
    half = channels // 2
    return base ** (-torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))


def sincos_3d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """positions (..., 3) integer -> (..., dim) float features.

    Each axis gets `2 * (dim // 6)` channels (sin then cos); leftover channels are zero.
    """
    per_axis = 2 * (dim // 6)
    if per_axis == 0:
        raise ValueError(f"sincos_3d needs dim >= 6, got {dim}")
    freqs = _axis_frequencies(per_axis, base, positions.device)  # (per_axis/2,)
    parts = []
    for axis in range(3):
        angles = positions[..., axis : axis + 1].float() * freqs  # (..., per_axis/2)
        parts += [angles.sin(), angles.cos()]
    features = torch.cat(parts, dim=-1)  # (..., 3*per_axis)
    return nn.functional.pad(features, (0, dim - features.shape[-1]))


class Rope3d(nn.Module):
    """Rotary position embedding over (t, h, w) for attention heads of size `head_dim`.

    `head_dim` is split into three groups of `2 * (head_dim // 6)` channels (one per axis); leftover
    channels are passed through unrotated.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.per_axis = 2 * (head_dim // 6)
        if self.per_axis == 0:
            raise ComponentError(f"Rope3d needs attention heads of at least 6 channels (dim / heads), got {head_dim}")
        self.head_dim = head_dim
        self.register_buffer("freqs", _axis_frequencies(self.per_axis, base, None), persistent=False)

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, N, 3) -> rotation angles (B, 1, N, 3*per_axis/2), broadcastable over heads."""
        angles = positions.float().unsqueeze(-1) * self.freqs  # (B, N, 3, per_axis/2)
        return angles.flatten(-2).unsqueeze(1)

    def rotations(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, N, 3) -> the rotations e^(i angle) as complex numbers (B, 1, N, 3*per_axis/2): compute
        them once and pass them to every `forward` instead of the angles."""
        angles = self.angles(positions)
        return torch.polar(torch.ones_like(angles), angles)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        # x: (B, heads, N, head_dim); angles: (B, 1, N, R/2) real angles or complex `rotations`, R = 3*per_axis
        # rotated channels. Channel pairs (2j, 2j+1) are complex numbers multiplied by their rotation, in one
        # kernel.
        rotation = angles if angles.is_complex() else torch.polar(torch.ones_like(angles), angles)
        rotated = rotation.shape[-1] * 2
        pairs = x[..., :rotated].float().unflatten(-1, (-1, 2))  # (B, heads, N, R/2, 2)
        if pairs.storage_offset() % 2 or any(stride % 2 for stride in pairs.stride()[:-1]):
            pairs = pairs.contiguous()  # complex views need even strides (an odd head size)
        turned = torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2)  # (B, heads, N, R)
        return torch.cat([turned.to(x.dtype), x[..., rotated:]], dim=-1)
