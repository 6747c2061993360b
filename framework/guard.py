"""`NonFiniteGuard`: a NaN or Inf loss or gradient never reaches the weights or a checkpoint.

Before each optimizer step the loss and the gradients are checked. A non-finite one either skips the step
(up to `max_bad_steps` times in a run: the gradients are dropped, so the optimizer leaves every weight as it
was) or stops training with one line naming the step. Stopping happens before the bad update, so the weights
a checkpoint can still receive are the last good ones, and no checkpoint is ever written with non-finite
weights (that is checked too, whatever made them).
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from .errors import PatchworldError


class NonFiniteError(PatchworldError):
    """Training met a non-finite loss, gradient or weight."""


class NonFiniteGuard(pl.Callback):
    """Stops (or, up to `max_bad_steps` times, skips) a step whose loss or gradients are not finite."""

    def __init__(self, max_bad_steps: int = 0):
        if max_bad_steps < 0:
            raise PatchworldError(f"WorldModel.max_bad_steps must be >= 0, got {max_bad_steps}")
        self.max_bad_steps, self.skipped = max_bad_steps, 0
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        loss, self._loss = self._loss, None
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16 scaling skips inf grads itself
        named = [] if scaled else [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        values = ([loss] if loss is not None else []) + (list(torch._foreach_norm([g for _, g in named])) if named else [])
        if not values or bool(torch.stack([v.float() for v in values]).isfinite().all()):
            return  # one host sync per step
        if loss is not None and not bool(loss.isfinite()):
            problem = f"the loss is {float(loss)}"
        else:
            problem = f"the gradient of {next(n for n, g in named if not bool(g.isfinite().all()))} is not finite"
        step = trainer.global_step
        if self.skipped >= self.max_bad_steps:
            allowance = f" (after skipping {self.skipped} bad steps, the most allowed)" if self.max_bad_steps else ""
            raise NonFiniteError(f"training stopped at step {step}: {problem}{allowance}; the weights are those of "
                                 f"the last good step. Lower the learning rate, or set --model.max_bad_steps N to "
                                 f"skip up to N bad steps")
        self.skipped += 1
        for param in pl_module.parameters():
            param.grad = None  # the optimizer skips parameters without gradients: nothing moves
        pl_module.print(f"skipped step {step}: {problem} ({self.skipped} of at most {self.max_bad_steps})")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for name, value in checkpoint["state_dict"].items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(value.isfinite().all()):
                raise NonFiniteError(f"refusing to save a checkpoint at step {trainer.global_step}: weight {name} "
                                     f"is not finite; the checkpoints already written are kept")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
