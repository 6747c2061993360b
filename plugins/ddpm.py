"""`DDPM`: denoising diffusion with the cosine schedule, eps- or v-prediction, and a deterministic DDIM sampler.

Time is continuous, t in [0, 1]; training draws it from `train_steps` discrete levels k / train_steps.
alpha_bar(t) = cos^2(((t + s) / (1 + s)) pi/2) / cos^2((s / (1 + s)) pi/2), alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar).
"""
from __future__ import annotations

import functools
import math

import torch

from patchworld import ComponentError
from patchworld.errors import require_positive
from patchworld.randomness import draw

from .generation import GenerativeObjective


class DDPM(GenerativeObjective):
    """Cosine-schedule diffusion with a DDIM sampler.

    Args:
        prediction: "v" (alpha noise - sigma x_0, well behaved at every noise level) or "eps" (the noise).
        cosine_offset: the schedule's small offset s.
        train_steps: number of discrete training noise levels.
        min_alpha_bar: alpha_bar is clamped here at t=1 so x_0 stays recoverable from the prediction.
        clip_x0: clamp the predicted x_0 to [-clip_x0, clip_x0] in each DDIM step (None: no clamp).
        **kwargs: the shared options of `GenerativeObjective` (caption_dropout, steps, guidance,
            mixture, predict_task, context_frames, seed, progress, feature_timestep, feature_depth).
    """

    def __init__(self, prediction: str = "v", cosine_offset: float = 0.008, train_steps: int = 1000,
                 min_alpha_bar: float = 1e-6, clip_x0: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if prediction not in ("v", "eps"):
            raise ComponentError(f"DDPM.prediction must be 'v' or 'eps', got {prediction!r}")
        require_positive("DDPM", train_steps=train_steps, min_alpha_bar=min_alpha_bar)
        if cosine_offset < 0:
            raise ComponentError(f"DDPM.cosine_offset must be >= 0, got {cosine_offset}")
        self.prediction, self.cosine_offset, self.train_steps = prediction, cosine_offset, train_steps
        self.min_alpha_bar, self.clip_x0 = min_alpha_bar, clip_x0

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        s = self.cosine_offset
        t = torch.as_tensor(t, dtype=torch.float64)
        value = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
        return value.clamp(self.min_alpha_bar, 1.0)

    def coefficients(self, t):
        alpha_bar = self.alpha_bar(t)
        dtype = t.dtype if torch.is_tensor(t) and t.is_floating_point() else torch.float32
        return alpha_bar.sqrt().to(dtype), (1 - alpha_bar).sqrt().to(dtype)

    def target(self, x0, noise, t):
        if self.prediction == "eps":
            return noise
        alpha, sigma = self.coefficients(self._broadcast(t, x0).to(x0.dtype))
        return alpha * noise - sigma * x0

    def x0_and_noise(self, x, prediction, t):
        """Recover (x_0, noise) from x_t and the network's prediction."""
        alpha, sigma = self.coefficients(torch.as_tensor(t, dtype=x.dtype))
        if self.prediction == "eps":
            x0 = (x - sigma * prediction) / alpha
        else:
            x0 = alpha * x - sigma * prediction
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        return x0, (x - alpha * x0) / sigma

    def training_timesteps(self, batch, tokens, device, generator=None):
        levels = draw(functools.partial(torch.randint, 1, self.train_steps + 1), generator, batch)  # (B,)
        return levels.to(device).float() / self.train_steps

    def schedule(self, steps, tokens):
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64)

    def step(self, x, prediction, t, t_next, model=None):
        x0, noise = self.x0_and_noise(x, prediction.to(x.dtype), t)  # DDIM (eta = 0)
        alpha_next, sigma_next = self.coefficients(torch.as_tensor(t_next, dtype=x.dtype))
        return alpha_next * x0 + sigma_next * noise
