"""`EMA`: an exponential moving average of the weights, the weights a trained model samples and is judged with.

Lightning's `WeightAveraging` callback keeps the average beside the model, swaps it in for validation, writes
it as the checkpoint's ``state_dict`` (so `predict`, `adherence`, `compare` and every loader of a checkpoint use
it) and keeps the raw weights under ``current_model_state``, from which a resumed run trains on exactly as the
uninterrupted run does. Turn it on with ``--model.ema DECAY`` (`WorldModel.ema`).

The decay warms up: with n weight sets averaged so far (the first step's weights are copied, n = 1), the next
step's are folded in with decay min(decay, (1 + n) / (10 + n)), so a short run's average is not dominated by
its random start (0.55 after 10 steps, 0.92 after 100, 0.99 after 1000): the schedule of TensorFlow's
ExponentialMovingAverage with num_updates.
"""
from __future__ import annotations

import torch
from pytorch_lightning.callbacks import WeightAveraging

from .errors import ComponentError


def warmed_up_decay(decay: float, updates: int) -> float:
    """The weight of the average of `updates` weight sets (1, 2, ...) when the next one is folded in."""
    return min(decay, (1 + updates) / (10 + updates))


class EMA(WeightAveraging):
    """Exponential moving average of the parameters with decay `decay`, warmed up (`warmed_up_decay`)."""

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ComponentError(f"WorldModel.ema must be a decay in (0, 1), e.g. 0.999; got {decay}")
        self.decay = decay
        # buffers (RoPE tables, token position ids) are constants in patchworld's parts: only parameters average
        super().__init__(use_buffers=False, multi_avg_fn=self.average)
        self.ended = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.ended = False
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module) -> None:
        """From here on the model holds the average (what follows in the same process, e.g. `compare`'s
        evaluation, uses it); the raw weights wait in the average's place for a checkpoint written after the end.
        (Lightning copies the average over the raw weights, so such a checkpoint could not resume exactly.)"""
        self._swap_models(pl_module)
        self.ended = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if not self.ended:
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        # the model's state_dict is already the average: add the raw weights as Lightning's layout has them
        swapped = self._average_model.state_dict()
        checkpoint["current_model_state"] = {name[len("module."):]: value for name, value in swapped.items()
                                             if name.startswith("module.")}
        checkpoint["averaging_state"] = {name: value for name, value in swapped.items() if not name.startswith("module.")}

    @torch.no_grad()
    def average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        """AveragedModel's in-place update of every averaged tensor towards the current one (`updates` weight sets
        averaged so far)."""
        decay = warmed_up_decay(self.decay, int(updates))
        torch._foreach_lerp_(averaged, current, 1 - decay)  # averaged += (1 - decay) * (current - averaged)
