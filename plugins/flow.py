"""`Flow`: rectified flow. x_t = (1 - t) x_0 + t noise; the network predicts the velocity noise - x_0;
training times are logit-normal and shifted towards noise for bigger clips; sampling is Euler steps or Heun's
2nd-order steps (two network calls per step, Euler on the last step to t=0)."""
from __future__ import annotations

import math
from typing import Literal

import torch

from patchworld import ComponentError
from patchworld.randomness import draw

from .generation import GenerativeObjective


class Flow(GenerativeObjective):
    """Rectified flow with a velocity target and an Euler or Heun sampler.

    Args:
        logit_mean: training times are sigmoid(N(logit_mean, logit_std^2)): the mean of the logit.
        logit_std: the standard deviation of the training times' logit.
        shift: timestep shift s, t -> s t / (1 + (s - 1) t), applied to training and sampling times.
            None (default): resolution/length-dependent, s = sqrt(tokens / base_tokens) (at least 1), so
            clips with more tokens spend more time at high noise.
        base_tokens: the token count at which the dependent shift is 1.
        sampler: ``euler`` (one network call per step) or ``heun`` (2nd order: two calls per step, so about
            as costly as Euler with twice the steps, and more accurate per call at few steps).
        **kwargs: the shared options of `GenerativeObjective` (caption_dropout, steps, guidance,
            mixture, predict_task, context_frames, seed, progress, feature_timestep, feature_depth).
    """

    def __init__(self, logit_mean: float = 0.0, logit_std: float = 1.0, shift: float | None = None,
                 base_tokens: int = 256, sampler: Literal["euler", "heun"] = "euler", **kwargs):
        super().__init__(**kwargs)
        if sampler not in ("euler", "heun"):
            raise ComponentError(f"Flow.sampler {sampler!r}; valid samplers: euler, heun")
        self.logit_mean, self.logit_std, self.shift, self.base_tokens = logit_mean, logit_std, shift, base_tokens
        self.sampler = sampler

    def shift_for(self, tokens: int) -> float:
        return self.shift if self.shift is not None else max(1.0, math.sqrt(tokens / self.base_tokens))

    @staticmethod
    def apply_shift(t: torch.Tensor, s: float) -> torch.Tensor:
        return s * t / (1 + (s - 1) * t)

    def coefficients(self, t):
        return 1 - t, t

    def target(self, x0, noise, t):
        return noise - x0  # velocity dx_t/dt

    def training_timesteps(self, batch, tokens, device, generator=None):
        t = torch.sigmoid(self.logit_mean + self.logit_std * draw(torch.randn, generator, batch).to(device))  # (B,)
        return self.apply_shift(t, self.shift_for(tokens))

    def schedule(self, steps, tokens):
        return self.apply_shift(torch.linspace(1, 0, steps + 1, dtype=torch.float64), self.shift_for(tokens))

    def step(self, x, prediction, t, t_next, model=None):
        dt = (t_next - t).to(x.dtype)
        euler = x + dt * prediction.to(x.dtype)
        if self.sampler == "euler" or model is None or float(t_next) == 0:
            return euler
        return x + dt * 0.5 * (prediction.to(x.dtype) + model(euler, t_next).to(x.dtype))  # Heun: trapezoid
