"""Chapter 3 exercises: rectified flow, its Euler sampler and classifier-free guidance.

Fill in each function (replace the `raise NotImplementedError`), then grade your work:
    patchworld course check 3
Every function keeps the signature and the shapes its docstring gives; docs/course/ch03_flow/README.md explains
the ideas, and the framework's own versions live in plugins/flow.py and plugins/generation.py (read them after
you tried)."""
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
    raise NotImplementedError(
        'reshape t to (B, 1, 1, 1, 1) so it broadcasts, then mix: at t = 0 the data, at t = 1 the '
        'noise'
    )


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict: the velocity dx_t/dt of `noised` (the same at every t).

    Args:
        x0, noise: (B, c, t, h, w).

    Returns:
        (B, c, t, h, w).
    """
    raise NotImplementedError("differentiate noised's line with respect to t")


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the sampler, from time t to t_next (t_next < t: towards the data).

    Args:
        x: (B, c, t, h, w), the sample at time t.
        velocity: (B, c, t, h, w), the predicted dx/dt at (x, t).
        t, t_next: 0-dim tensors.

    Returns:
        the sample at time t_next, (B, c, t, h, w).
    """
    raise NotImplementedError(
        'move along the velocity for the time step t_next - t (negative: towards the data)'
    )


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
    raise NotImplementedError(
        "unconditional + guidance * (the caption's effect, conditional - unconditional)"
    )
