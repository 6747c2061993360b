"""`Flow`: rectified flow. x_t = (1 - t) x_0 + t noise; the loss and the sampler work on the velocity
noise - x_0, which the network predicts directly or, with ``prediction="x"``, through its prediction of the clean
x_0 (JiT, "Back to Basics: Let Denoising Generative Models Denoise": a narrow network predicts a clean patch
more easily than a noisy one when patches have many values, as pixel patches do); training times are logit-normal and shifted towards noise for bigger clips; sampling is Euler steps or Heun's
2nd-order steps (two network calls per step, Euler on the last step to t=0)."""
from __future__ import annotations

import math
from typing import Literal

import torch

from patchworld import ComponentError
from patchworld.errors import require_positive
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
        prediction: what the network outputs: ``velocity`` (noise - x_0) or ``x`` (the clean x_0; the loss
            compares velocities (x_t - x_0) / max(t, min_t), i.e. x_0's error weighted 1 / max(t, min_t)^2, and
            the sampler moves along (x_t - x_0) / t).
        min_t: with ``prediction="x"``, the smallest t the loss divides by (bounds its weight).
        **kwargs: the shared options of `GenerativeObjective` (caption_dropout, steps, guidance,
            mixture, predict_task, context_frames, seed, progress, feature_timestep, feature_depth).
    """

    def __init__(self, logit_mean: float = 0.0, logit_std: float = 1.0, shift: float | None = None,
                 base_tokens: int = 256, sampler: Literal["euler", "heun"] = "euler",
                 prediction: Literal["velocity", "x"] = "velocity", min_t: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        if sampler not in ("euler", "heun"):
            raise ComponentError(f"Flow.sampler {sampler!r}; valid samplers: euler, heun")
        if prediction not in ("velocity", "x"):
            raise ComponentError(f"Flow.prediction {prediction!r}; valid predictions: velocity, x")
        if not 0 < min_t < 1:
            raise ComponentError(f"Flow.min_t must be in (0, 1), got {min_t}")
        require_positive("Flow", base_tokens=base_tokens)
        if logit_std < 0:
            raise ComponentError(f"Flow.logit_std must be >= 0, got {logit_std}")
        self.prediction, self.min_t = prediction, min_t
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
        velocity = noise - x0  # dx_t/dt
        if self.prediction == "velocity":
            return velocity
        t = self._broadcast(t, x0)
        return velocity * (t / t.clamp(min=self.min_t))  # (x_t - x_0) / max(t, min_t): what from_network makes of x_0

    def from_network(self, output, x_t, t):
        if self.prediction == "velocity":
            return output
        return (x_t - output) / self._broadcast(t, x_t).clamp(min=self.min_t)  # x_0 -> (x_t - x_0) / max(t, min_t)

    def velocity(self, prediction, t):
        """The prediction as the velocity dx_t/dt the sampler moves along (x-prediction: undo the min_t clamp)."""
        if self.prediction == "velocity":
            return prediction
        return prediction * (t.clamp(min=self.min_t) / t).to(prediction.dtype)

    def training_timesteps(self, batch, tokens, device, generator=None):
        t = torch.sigmoid(self.logit_mean + self.logit_std * draw(torch.randn, generator, batch).to(device))  # (B,)
        return self.apply_shift(t, self.shift_for(tokens))

    def schedule(self, steps, tokens):
        return self.apply_shift(torch.linspace(1, 0, steps + 1, dtype=torch.float64), self.shift_for(tokens))

    def step(self, x, prediction, t, t_next, model=None):
        dt = (t_next - t).to(x.dtype)
        velocity = self.velocity(prediction.to(x.dtype), t)
        euler = x + dt * velocity
        if self.sampler == "euler" or model is None or float(t_next) == 0:
            return euler
        return x + dt * 0.5 * (velocity + self.velocity(model(euler, t_next).to(x.dtype), t_next))  # Heun: trapezoid
