"""Chapter 2 reference solutions: the causal video VAE."""
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
    kt, kh, kw = weight.shape[2:]
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0))  # (B, C_in, kt-1 + T, H + 2(kh//2), W + 2(kw//2))
    return F.conv3d(x, weight, bias, stride=stride)


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
    st, sh, sw = factor
    x = torch.cat([x[:, :, :1].expand(-1, -1, st - 1, -1, -1), x], dim=2)  # (B, C, st*(1 + k), H, W)
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // st, st, H // sh, sh, W // sw, sw)  # (B, C, t, st, h, sh, w, sw)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, st, sh, sw, t, h, w)
    return x.reshape(B, C * st * sh * sw, T // st, H // sh, W // sw)


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of the diagonal Gaussian posterior N(mean, exp(logvar)), differentiable in mean and logvar
    (the reparameterisation trick).

    Args:
        mean, logvar: (B, c, t, h, w), the encoder's posterior mean and log-variance.
        noise: (B, c, t, h, w) standard normal values.

    Returns:
        z (B, c, t, h, w) = mean + standard deviation * noise.
    """
    return mean + (0.5 * logvar).exp() * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, averaged over every value of the batch.

    Per value: 0.5 * (mean^2 + exp(logvar) - 1 - logvar).

    Args:
        mean, logvar: (B, c, t, h, w).

    Returns:
        a 0-dim tensor.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
