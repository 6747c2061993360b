"""Chapter 2 exercises: the causal video VAE.

Fill in each function (replace the `raise NotImplementedError`), then grade your work:
    patchworld course check 2
Every function keeps the signature and the shapes its docstring gives; docs/course/ch02_vae/README.md explains
the ideas, and the framework's own versions live in plugins/vae.py (read it after you tried)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: tuple[int, int, int] = (1, 1, 1)) -> torch.Tensor:
    """A 3D convolution that never looks at the future: output frame i sees input frames <= i * stride only.

    Time is zero-padded with kt - 1 frames on the past side only (before frame 0); height and width are
    zero-padded symmetrically with kh // 2 and kw // 2 (so a stride-1 convolution keeps the frame size).

    Args:
        x: (B, C_in, T, H, W).
        weight: (C_out, C_in, kt, kh, kw), odd kh and kw.
        bias: (C_out,) or None.
        stride: (st, sh, sw).

    Returns:
        (B, C_out, 1 + (T - 1) // st, H // sh, W // sw) for H, W multiples of the stride.
    """
    raise NotImplementedError(
        'F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)) pads (W, H, T), last axis first; '
        'then F.conv3d(x, weight, bias, stride=stride)'
    )


def space_to_channels(x: torch.Tensor, factor: tuple[int, int, int]) -> torch.Tensor:
    """The causal, parameter-free downsampling shortcut: fold (st, sh, sw) blocks of time and space into channels.

    Frame 0 is first repeated st - 1 times on the past side, so a clip of T = 1 + k * st frames becomes
    st * (1 + k) frames and output frame 0 holds copies of input frame 0 alone. Then each block of
    st x sh x sw values becomes st * sh * sw channels, ordered (c, st, sh, sw) as in
    ``rearrange(x, "b c (t st) (h sh) (w sw) -> b (c st sh sw) t h w")``.

    Args:
        x: (B, C, T, H, W) with T = 1 + k * st and H, W multiples of sh, sw.
        factor: (st, sh, sw).

    Returns:
        (B, C * st * sh * sw, 1 + (T - 1) // st, H // sh, W // sw).
    """
    raise NotImplementedError(
        'torch.cat the first frame repeated st - 1 times in front of x (dim 2), then reshape to (B, '
        'C, t, st, h, sh, w, sw), permute to (B, C, st, sh, sw, t, h, w) and reshape'
    )


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of the diagonal Gaussian posterior N(mean, exp(logvar)), differentiable in mean and logvar
    (the reparameterisation trick).

    Args:
        mean, logvar: (B, c, t, h, w), the encoder's posterior mean and log-variance.
        noise: (B, c, t, h, w) standard normal values.

    Returns:
        z (B, c, t, h, w) = mean + standard deviation * noise.
    """
    raise NotImplementedError('the standard deviation is exp(logvar / 2)')


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, averaged over every value of the batch.

    Per value: 0.5 * (mean^2 + exp(logvar) - 1 - logvar).

    Args:
        mean, logvar: (B, c, t, h, w).

    Returns:
        a 0-dim tensor.
    """
    raise NotImplementedError('0.5 * (mean^2 + exp(logvar) - 1 - logvar), averaged with .mean()')
