"""Chapter 3 reference solutions: rectified flow, its Euler sampler and classifier-free guidance."""
from __future__ import annotations

import torch


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time t on the straight line from the data x0 (t = 0) to the noise (t = 1).

    Args:
        x0: (B, c, t, h, w) clean latents.
        noise: (B, c, t, h, w) standard normal values.
        t: (B,) times in [0, 1], one per clip.

    Returns:
        x_t (B, c, t, h, w) = (1 - t) * x0 + t * noise, each clip at its own time.
    """
    t = t.reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, 1, 1): broadcasts over the clip
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict: the velocity dx_t/dt of `noised` (the same at every t).

    Args:
        x0, noise: (B, c, t, h, w).

    Returns:
        (B, c, t, h, w).
    """
    return noise - x0


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the sampler, from time t to t_next (t_next < t: towards the data).

    Args:
        x: (B, c, t, h, w), the sample at time t.
        velocity: (B, c, t, h, w), the predicted dx/dt at (x, t).
        t, t_next: 0-dim tensors.

    Returns:
        the sample at time t_next, (B, c, t, h, w).
    """
    return x + (t_next - t).to(x.dtype) * velocity


def guided_velocity(conditional: torch.Tensor, unconditional: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: start from the prediction without the caption and move `guidance` times the
    caption's effect (guidance 1: the conditional prediction; 0: the unconditional one; above 1: further).

    Args:
        conditional: (B, c, t, h, w), the prediction with the caption.
        unconditional: (B, c, t, h, w), the prediction with the empty caption "".
        guidance: the scale.

    Returns:
        (B, c, t, h, w).
    """
    return unconditional + guidance * (conditional - unconditional)
