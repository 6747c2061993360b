"""What patchworld adds around a Lightning training run: a progress bar that counts steps, a ``last.ckpt``
that holds the final step, one line when training stops short of its plan, and no empty run folder left by a
command that failed. `patchworld.recipes.PatchworldCLI` installs them on every trainer it builds."""
from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from pytorch_lightning.callbacks import Callback, RichProgressBar, Timer


class StepsProgressBar(RichProgressBar):
    """Lightning's progress bar, also showing the optimizer steps done of the planned ones ("step 523/600"): a
    recipe plans steps, not epochs. Lightning's own bar would read "Epoch 1/-2" when no max_epochs is set."""

    def get_metrics(self, trainer, pl_module) -> dict:
        steps = f"{trainer.global_step}/{trainer.max_steps}" if trainer.max_steps > 0 else trainer.global_step
        return {"step": steps, **super().get_metrics(trainer, pl_module)}

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        return description.replace(f"Epoch {current_epoch}/-2", f"Epoch {current_epoch}")  # no epoch limit


class LastAtTheEnd(Callback):
    """Save `last.ckpt` when training ends after steps no checkpoint holds yet. Lightning's checkpoint callback
    saves it at the end only if it never saved one, so a run stopped by `max_time` between two periodic
    checkpoints (`every_n_train_steps`) would lose every step since the last of them."""

    def __init__(self):
        self.saved_step = -1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        callback = trainer.checkpoint_callback
        if trainer.global_step > 0 and self.saved_step != trainer.global_step:
            path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            callback.last_model_path = str(path)
            trainer.save_checkpoint(path, weights_only=callback.save_weights_only)


def cut_short(trainer) -> str | None:
    """One line when training ended before `max_steps`, naming what stopped it, else None; so nobody takes a
    model stopped by a wall-time budget for the one a recipe documents."""
    steps, planned = trainer.global_step, trainer.max_steps
    if not 0 < planned or steps >= planned:
        return None
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        reason = (f"stopped by max_time ({timedelta(seconds=round(timer.time_elapsed()))} of training) after "
                  f"{steps} of {planned} steps; this is not the fully trained model (raise --trainer.max_time)")
    elif trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        reason = f"stopped by max_epochs ({trainer.max_epochs}) after {steps} of {planned} steps"
    else:
        reason = f"stopped early after {steps} of {planned} steps (a callback asked to stop)"
    return f"patchworld: training ended at step {steps} of the {planned} planned: {reason}"


def discard_empty_run(fresh: list[Path]) -> None:
    """After a failed command, remove the folders it made (`fresh`, innermost first) if they hold nothing but
    the run's saved configuration."""
    if fresh and fresh[-1].is_dir():
        files = [p for p in fresh[-1].rglob("*") if p.is_file()]
        if all(p.name in ("config.yaml", "hparams.yaml", "metrics.csv") for p in files):
            shutil.rmtree(fresh[-1], ignore_errors=True)
