"""`WorldModel`: the one LightningModule that runs every recipe.

It composes tokenizer, backbone, objective, and optionally a conditioner and a decoder, and delegates
every method-specific decision to the objective. It owns only what is common: the optimizer with
warmup + cosine learning rate (and an optional cosine weight-decay schedule), logging, and the
prediction writer.
"""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import GradClipAlgorithmType

from .averaging import EMA
from .contracts import check_parts, check_pixels_or_latents, check_step_output
from .errors import PatchworldError
from .guard import NonFiniteGuard
from .interfaces import Adapter, Backbone, Conditioner, Decoder, Objective, Tokenizer
from .writer import DecoderWriter

# WorldModel hands every batch to its objective's prepare_batch on purpose, whatever the datamodule.
warnings.filterwarnings("ignore", message="You have overridden `on_before_batch_transfer`")


def warmup_cosine(step: int, total: float, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup to 1 over `warmup` steps, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    if not math.isfinite(total) or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(module: torch.nn.Module) -> list[dict]:
    """The optimizer's two groups of `module`'s trainable parameters: weights (>= 2 dimensions) with the
    optimizer's weight decay, biases and norms without."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class WorldModel(pl.LightningModule):
    """A video world model assembled from interchangeable parts.

    Args:
        tokenizer: pixels <-> latents (e.g. ``Pixels``, ``VAE``).
        objective: how it learns and samples (e.g. ``VideoMAE``, ``VJEPA``, ``Flow``).
        backbone: tokens -> features (e.g. ``ViT``, ``DiT``); optional for objectives that train only
            the tokenizer (VAE reconstruction).
        conditioner: captions -> conditioning tokens (e.g. ``TinyTextEncoder``); optional.
        decoder: what ``predict`` writes (e.g. ``VideoWriter``, ``EmbeddingWriter``); optional.
        optimizer: optimizer factory; default AdamW(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), fused=True),
            whose fused kernel makes the optimizer step ~4x faster on a CPU than AdamW's default loop.
            Parameters with fewer than 2 dimensions (biases, norms) get no weight decay.
        warmup_steps: linear learning-rate warmup steps, then cosine decay to ``min_lr_ratio`` x lr.
        min_lr_ratio: final learning rate as a fraction of the peak.
        weight_decay_end: if set, weight decay follows a cosine from its initial value to this one.
        max_bad_steps: steps whose loss or gradients are NaN/Inf that may be skipped (their update dropped)
            before training stops; with 0 the first one stops training, one line naming the step
            (`NonFiniteGuard`). Weights and checkpoints never become non-finite either way.
        adapter: fine-tune only a few added weights on a trained base, the rest frozen (e.g. ``LoRA``:
            ``--model.adapter LoRA --model.adapter.rank 8 --model.adapter.base BASE.ckpt``); docs/data.md.
        ema: decay of an exponential moving average of the weights (e.g. 0.999, warmed up; `patchworld.averaging`)
            that validation uses and checkpoints hold as the model's weights, so predict and every evaluation
            use it; the raw weights are kept in the checkpoint for resuming. None: no average.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        objective: Objective,
        backbone: Backbone | None = None,
        conditioner: Conditioner | None = None,
        decoder: Decoder | None = None,
        optimizer: OptimizerCallable | None = None,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.05,
        weight_decay_end: float | None = None,
        max_bad_steps: int = 0,
        adapter: Adapter | None = None,
        ema: float | None = None,
    ):
        super().__init__()
        with warnings.catch_warnings():
            # From the CLI the saved hyper-parameters are the parsed recipe (so load_from_checkpoint rebuilds
            # every part); built in Python they are the part objects themselves, which are not kept: a
            # checkpoint holds plain data only, so it loads with weights_only=True (framework/checkpoints.py).
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters(logger=False)
        for key in [k for k, v in self.hparams.items() if not isinstance(v, (dict, list, tuple, str, int, float, type(None)))]:
            del self.hparams[key]
        self.tokenizer, self.conditioner, self.backbone = tokenizer, conditioner, backbone
        self.objective, self.decoder = objective, decoder
        for part in (tokenizer, conditioner, backbone, objective, decoder):
            if part is not None:
                part.bind(self)
        self.optimizer_factory = optimizer
        self.warmup_steps, self.min_lr_ratio, self.weight_decay_end = warmup_steps, min_lr_ratio, weight_decay_end
        self.guard = NonFiniteGuard(max_bad_steps)
        self.ema = EMA(ema) if ema is not None else None
        # the run seed every objective's draws are keyed on (patchworld.randomness): the recipe's
        # seed_everything, which Lightning's CLI applies before it builds the model; kept in checkpoints
        self.seed = torch.initial_seed()
        self._rng_states_to_restore: dict | None = None
        # the longest clip (pixel frames) it trained on, kept in checkpoints (None: not known, e.g. before
        # training or from an older checkpoint); generation slides windows of this length over longer videos
        self.clip_frames: int | None = None
        self._checked_stages: set[str] = set()  # stages whose first batch was checked (`check_first_batch`)
        self.adapter = adapter
        if adapter is not None:  # last: it may load the base weights (and clip length), then freezes them
            adapter.bind(self)

    # ---- steps: all delegated to the objective, whose results are checked (patchworld.contracts) ----
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        check_pixels_or_latents(self.objective, batch)
        return check_step_output(self.objective, "prepare_batch", self.objective.prepare_batch(batch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.check_first_batch("train", batch)
        frames = batch["video"].shape[2] if "video" in batch else self.tokenizer.pixel_frames(batch["latents"].shape[2])
        self.clip_frames = max(self.clip_frames or 0, frames)
        out = check_step_output(self.objective, "training_step", self.objective.training_step(self, batch))
        self._log("train", out, batch)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.check_first_batch("val", batch)
        out = check_step_output(self.objective, "validation_step", self.objective.validation_step(self, batch))
        self._log("val", out, batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.check_first_batch("test", batch)
        out = check_step_output(self.objective, "validation_step", self.objective.validation_step(self, batch))
        self._log("test", out, batch)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        self.check_first_batch("predict", batch)
        return check_step_output(self.objective, "predict_step", self.objective.predict_step(self, batch))

    def latents(self, batch: dict) -> torch.Tensor:
        """The batch's latents (B, c, t, h, w): ``batch["latents"]`` when the datamodule already holds them (a
        `LatentCache`, encoded once by this frozen tokenizer), else the tokenizer's encoding of ``batch["video"]``."""
        return batch["latents"] if "latents" in batch else self.tokenizer.encode(batch["video"])

    def condition(self, captions: list[str], batch: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The conditioner's tokens (B, L, D) and mask (B, L) for `captions` ((None, None) without a conditioner).
        Row b comes from the batch's cached caption embeddings (``batch["caption_tokens"]``, ``["caption_mask"]``:
        a `LatentCache` made with this frozen conditioner) when captions[b] is the batch's own caption; other
        captions (e.g. "" for caption dropout) are encoded."""
        if self.conditioner is None:
            return None, None
        if batch is None or "caption_tokens" not in batch:
            return self.conditioner(captions)
        cached, cached_mask = batch["caption_tokens"], batch["caption_mask"]  # (B, Lc, D), (B, Lc)
        fresh = [b for b, (caption, own) in enumerate(zip(captions, batch["caption"])) if caption != own]
        if not fresh:
            return cached, cached_mask
        tokens, mask = self.conditioner([captions[b] for b in fresh])  # (F, Lf, D), (F, Lf)
        length = max(cached.shape[1], tokens.shape[1])
        out = cached.new_zeros(cached.shape[0], length, cached.shape[2])  # (B, L, D), padding masked out
        out_mask = cached_mask.new_zeros(cached.shape[0], length)
        out[:, : cached.shape[1]], out_mask[:, : cached.shape[1]] = cached, cached_mask
        out[fresh], out_mask[fresh] = 0, False
        out[fresh, : tokens.shape[1]], out_mask[fresh, : tokens.shape[1]] = tokens.to(out.dtype), mask
        return out, out_mask

    def check_first_batch(self, stage: str, batch: dict) -> None:
        """On a stage's first batch, check the batch and the tokenizer's, backbone's and conditioner's outputs
        on it against their contracts (`patchworld.contracts.check_parts`: once per stage, on two clips)."""
        if stage not in self._checked_stages:
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            check_parts(self, batch, datamodule or "the batch")
            self._checked_stages.add(stage)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.weight_decay_end is None:
            return
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress))
        for group in self.optimizers().optimizer.param_groups:
            start = group.setdefault("initial_weight_decay", group["weight_decay"])
            if start > 0:
                group["weight_decay"] = self.weight_decay_end + (start - self.weight_decay_end) * cosine

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # the objective's after-step update (e.g. V-JEPA's EMA target) belongs to the step itself: run here, it
        # is in every checkpoint of this step (callbacks such as ModelCheckpoint save in on_train_batch_end,
        # before the module's own on_train_batch_end), so a resumed run does not lose it
        self.objective.on_train_batch_end(self, self.progress_at(self.global_step + 1))

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (0 when the length of training is unknown)."""
        return self.progress_at(self.global_step)

    def progress_at(self, step: int) -> float:
        """The fraction of training done after `step` optimizer steps."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        return min(1.0, step / total) if math.isfinite(total) and total > 0 else 0.0

    def _log(self, stage: str, values: dict[str, torch.Tensor], batch: dict) -> None:
        size = (batch["video"] if "video" in batch else batch["latents"]).shape[0]
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", batch_size=size, sync_dist=stage != "train")

    # ---- exact resume: the run seed and the global RNG states (and the clip length) travel in the checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the run seed and torch / numpy / python RNG states (for anything still drawn from them,
        e.g. timm's DropPath), as tensors and plain values so a weights-only load accepts them, and the
        training clip length."""
        checkpoint["patchworld_clip_frames"] = self.clip_frames
        name, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint["patchworld_randomness"] = {
            "seed": self.seed,
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's run seed (validation draws depend on it) and clip length now; the RNG states
        are put back when training restarts (`on_train_start`, after Lightning's sanity check has used them)."""
        self.clip_frames = checkpoint.get("patchworld_clip_frames")
        saved = checkpoint.get("patchworld_randomness")
        if saved is not None:
            self.seed = int(saved["seed"])
            self._rng_states_to_restore = saved

    def on_train_start(self) -> None:
        saved, self._rng_states_to_restore = self._rng_states_to_restore, None
        if saved is not None:
            torch.set_rng_state(saved["torch"])
            name, keys, position, has_gauss, gauss = saved["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
            random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in saved["python"]))

    # ---- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = parameter_groups(self)
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), fused=True)
        else:
            optimizer = self.optimizer_factory(groups)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, self.warmup_steps, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, which also works with a fused optimizer in bf16-mixed. Lightning refuses that
        pair for every mixed precision because a fused optimizer unscales fp16's scaled gradients inside its
        step, too late to clip them; bf16 gradients are never scaled, so they are clipped as they are (with
        fp16's gradient scaler and a fused optimizer, a one-line error says what to change)."""
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision):
            if plugin.scaler is None:
                algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
                Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # skips the fp16-only check
                return
            if optimizer.defaults.get("fused"):
                raise PatchworldError(f"trainer.gradient_clip_val {gradient_clip_val} cannot clip the scaled gradients "
                                      f"of {plugin.precision} with a fused optimizer, which unscales them inside its "
                                      f"step: use --trainer.precision bf16-mixed, or --model.optimizer.init_args.fused false")
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self):
        callbacks = [self.guard, *self.objective.callbacks(), *(self.adapter.callbacks() if self.adapter else [])]
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        callbacks += [self.ema] if self.ema is not None and fitting else []  # elsewhere the checkpoint holds it
        if self.decoder is not None:
            callbacks.append(DecoderWriter(self.decoder))
        return callbacks

    # ---- the representation API used by probes and the comparison ------------------------------
    @torch.no_grad()
    def features(self, video: torch.Tensor, **where) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of a video (B, C, T, H, W): tokens (B, N, D), positions (B, N, 3); `where` picks
        the layer (and noise level) among the objective's `feature_options`."""
        return self.objective.features(self, video, **where)

    @torch.no_grad()
    def surprise(self, video: torch.Tensor, context: int) -> torch.Tensor:
        """Predictive surprise over time (B, T) from the objective's own prediction of each next step out of
        the `context` frames before it (NaN before `context`)."""
        return self.objective.surprise(self, video, context)

    def prediction_dir(self) -> Path:
        """Where `predict` writes: <run dir>/predictions."""
        root = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(root) / "predictions"
