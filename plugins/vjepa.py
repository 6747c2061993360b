"""`VJEPA`: video joint-embedding predictive architecture — predict the *features* of masked regions.

One training step (per mask family, both families every step; masks come from `prepare_batch`):

1. tubelets: the backbone's Conv3d patch embedding turns the clip into tokens (B, N, D) at (t, h, w);
2. context encoder: the recipe's backbone runs on the visible tokens only (gathered by index);
3. predictor: a narrow ViT (`TokenPredictor`) sees the context features plus learned mask tokens at the
   target positions and predicts the target encoder's features there;
4. target encoder: an exponential moving average (EMA) of the context encoder runs on the full clip
   without gradient; its features are layer-normed and the loss is L1 at the target positions only.

After every optimizer step the target encoder moves towards the context encoder with momentum rising
linearly from `ema[0]` to `ema[1]` over training (`progress` from the WorldModel).

Anti-collapse (`anti_collapse`):
* ``"ema"``    — V-JEPA: EMA target encoder + stop-gradient (default).
* ``"sigreg"`` — LeJEPA-style, no EMA: the context encoder itself encodes the full clip (gradient flows
  through both branches) and SIGReg pushes the target features towards an isotropic Gaussian.
* ``"none"``   — the context encoder is its own target, no stop-gradient, no regulariser: a deliberately
  collapsing control (EMA momentum 0 without stop-gradient), used to test the collapse monitor.

Collapse monitors (every `monitor_every` steps, logged as ``train/monitor/*``) are read by
`CollapseMonitor`, which warns loudly when one crosses its threshold.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import warnings
from typing import Literal

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
import torch
import torch.nn.functional as F

from patchworld import ComponentError, DataError, Objective, gather_tokens, split_past_future
from patchworld.randomness import Generators, batch_generator, sample_generators
from patchworld.errors import require_positive

from .masks import BlockMask, MaskFamily, future_mask, sample_masks
from .vit import TokenPredictor

log = logging.getLogger(__name__)

AntiCollapse = Literal["ema", "sigreg", "none"]


# ---- monitors ---------------------------------------------------------------------------------------
def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of (N, D) features.

    Ranges from 1 (every row the same direction) to min(N, D)."""
    singular = torch.linalg.svdvals(features.float())
    p = singular / singular.sum().clamp_min(eps) + eps
    return torch.exp(-(p * p.log()).sum())


def mean_cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between different rows of (N, D) features (1 = all rows point the same way)."""
    unit = F.normalize(features.float(), dim=-1)
    n = unit.shape[0]
    if n < 2:
        return unit.new_tensor(float("nan"))
    similarity = unit @ unit.T  # (N, N)
    return (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))


def per_dim_std(features: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the std of each channel across all rows of (..., D) features."""
    return features.float().reshape(-1, features.shape[-1]).std(dim=0).mean()


def collapse_statistics(target: torch.Tensor, prediction: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four monitors from target features (B, N, D) (before the loss's layer norm) and predictions
    (B, Nt, D), computed in float32 even under autocast."""
    with torch.autocast(target.device.type, enabled=False):
        pooled = target.float().mean(dim=1)  # (B, D)
        return {
            "target_std": per_dim_std(target),
            "effective_rank": effective_rank(pooled),
            "cosine_similarity": mean_cosine_similarity(pooled),
            "predictor_std": per_dim_std(prediction),
        }


# ---- SIGReg -------------------------------------------------------------------------------------------
def sigreg(features: torch.Tensor, slices: int = 256, knots: int = 17, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sketched isotropic Gaussian regulariser (LeJEPA, Balestriero & LeCun 2025).

    Projects (N, D) features on `slices` random unit directions and, for each 1-D projection, measures the
    Epps-Pulley distance between its empirical characteristic function and that of N(0, 1):
    N * integral over t of |mean_n exp(i t x_n) - exp(-t^2/2)|^2 exp(-t^2/2) dt (trapezoid on [-5, 5]).
    Returns the mean over slices; zero only when every projection looks standard normal, so a collapsed
    (constant) representation is heavily penalised.
    """
    with torch.autocast(features.device.type, enabled=False):  # phases need float32 precision
        return _sigreg(features.float().reshape(-1, features.shape[-1]), slices, knots, generator)


def _sigreg(x: torch.Tensor, slices: int, knots: int, generator: torch.Generator | None) -> torch.Tensor:
    # x: (N, D) float32
    directions = torch.randn(x.shape[1], slices, generator=generator).to(x.device)  # drawn on the CPU
    directions = directions / directions.norm(dim=0, keepdim=True)  # (D, S) unit columns
    t = torch.linspace(-5, 5, knots, device=x.device)  # (K,)
    gaussian_cf = torch.exp(-0.5 * t**2)  # (K,)
    phase = (x @ directions).unsqueeze(-1) * t  # (N, S, K)
    real, imag = phase.cos().mean(0), phase.sin().mean(0)  # (S, K) empirical characteristic function
    error = ((real - gaussian_cf) ** 2 + imag**2) * gaussian_cf  # (S, K)
    return torch.trapezoid(error, t, dim=-1).mean() * x.shape[0]


# ---- the objective ------------------------------------------------------------------------------------
class VJEPA(Objective):
    """V-JEPA: L1 between predicted and EMA-target features at multi-block-masked tubelets.

    Args:
        predictor_dim: width of the narrow predictor ViT.
        predictor_depth: the predictor's transformer blocks.
        predictor_heads: the predictor's attention heads.
        short_range: (blocks, spatial scale) of the short-range mask family.
        long_range: (blocks, spatial scale) of the long-range mask family.
        aspect_ratio: range of block height / width.
        ema: target-encoder momentum at the start and the end of training (linear in between).
        anti_collapse: "ema" (V-JEPA), "sigreg" (no EMA, LeJEPA's regulariser) or "none" (collapsing control).
        sigreg_weight: weight of SIGReg when anti_collapse="sigreg" (the prediction loss gets 1 - weight).
        sigreg_slices: random projection directions per SIGReg evaluation.
        monitor_every: compute the collapse monitors every this many training steps (0 = never).
        future_frames: also train on a *future* mask (`masks.future_mask`): the last k token frames are the
            targets, every earlier token the context (k = this count if an integer >= 1, else this fraction
            of the token frames). None (default): only the two multi-block families.
        block_masks: use the short- and long-range multi-block families (default True); False with
            `future_frames` trains on the future mask alone.
        context_loss: weight of V-JEPA 2.1's dense loss on the *visible* tokens (0 = off, the V-JEPA loss):
            the predictor also reproduces the target encoder's features at every context token, each
            weighted `context_loss / sqrt(d)` with d its token distance to the nearest target (>= 1), so the
            encoder has to keep local detail in the context tokens instead of only global summaries.
    """

    def __init__(self, predictor_dim: int = 96, predictor_depth: int = 4, predictor_heads: int = 4,
                 short_range: tuple[int, float] = (8, 0.15), long_range: tuple[int, float] = (2, 0.7),
                 aspect_ratio: tuple[float, float] = (0.75, 1.5), ema: tuple[float, float] = (0.998, 1.0),
                 anti_collapse: AntiCollapse = "ema", sigreg_weight: float = 0.05, sigreg_slices: int = 256,
                 monitor_every: int = 10, future_frames: float | None = None, block_masks: bool = True,
                 context_loss: float = 0.0):
        super().__init__()
        if context_loss < 0:
            raise ComponentError(f"VJEPA.context_loss must be >= 0 (0 = off), got {context_loss}")
        self.context_loss = context_loss
        if future_frames is not None and future_frames <= 0:
            raise ComponentError(f"VJEPA.future_frames must be > 0 (token frames, or a fraction of them), got {future_frames}")
        if not block_masks and future_frames is None:
            raise ComponentError("VJEPA.block_masks=False needs future_frames: there would be no mask to train on")
        self.future_frames, self.block_masks = future_frames, block_masks
        if anti_collapse not in ("ema", "sigreg", "none"):
            raise ComponentError(f"VJEPA.anti_collapse must be 'ema', 'sigreg' or 'none', got {anti_collapse!r}")
        if not all(0 <= m <= 1 for m in ema):
            raise ComponentError(f"VJEPA.ema momenta must lie in [0, 1], got {tuple(ema)}")
        if not 0 < sigreg_weight < 1:
            raise ComponentError(f"VJEPA.sigreg_weight must be in (0, 1), got {sigreg_weight}")
        require_positive("VJEPA", predictor_dim=predictor_dim, predictor_depth=predictor_depth,
                         predictor_heads=predictor_heads, sigreg_slices=sigreg_slices)
        if monitor_every < 0:
            raise ComponentError(f"VJEPA.monitor_every must be >= 0 (0 = off), got {monitor_every}")
        for name, pair in (("short_range", short_range), ("long_range", long_range), ("aspect_ratio", aspect_ratio),
                           ("ema", ema)):
            if len(pair) != 2:
                raise ComponentError(f"VJEPA.{name} must be a pair of numbers, got {pair!r}")
        self.families = (MaskFamily(int(short_range[0]), float(short_range[1]), tuple(aspect_ratio)),
                         MaskFamily(int(long_range[0]), float(long_range[1]), tuple(aspect_ratio)))
        self.predictor_dim, self.predictor_depth, self.predictor_heads = predictor_dim, predictor_depth, predictor_heads
        self.ema, self.anti_collapse = (float(ema[0]), float(ema[1])), anti_collapse
        self.sigreg_weight, self.sigreg_slices = sigreg_weight, sigreg_slices
        self.monitor_every = monitor_every
        self.momentum = self.ema[0]
        self.steps = 0
        self.last_monitors: dict[str, float] = {}
        self.last_monitor_step = -1
        self.collapse_monitor = CollapseMonitor()

    def bind(self, world) -> None:
        if world.backbone is None:
            raise ComponentError("VJEPA needs a backbone (e.g. ViT) as its context encoder")
        self.predictor = TokenPredictor(world.backbone.dim, self.predictor_dim, self.predictor_depth,
                                        self.predictor_heads, world.backbone.dim)
        self.target_encoder = None
        if self.anti_collapse == "ema":
            self.target_encoder = copy.deepcopy(world.backbone).requires_grad_(False)
        self._latent_grid = world.tokenizer.latent_grid  # for prepare_batch, which runs without the world
        self._patch = world.backbone.patch_size
        self._mask_generators = functools.partial(sample_generators, world, stream="masks")

    # ---- masks: sampled on the host, in the data path -------------------------------------------
    def token_grid(self, video: torch.Tensor) -> tuple[int, int, int]:
        """The (t, h, w) token grid of a (B, C, T, H, W) video."""
        latent = self._latent_grid(*video.shape[2:])
        if any(n % p for n, p in zip(latent, self._patch)):
            raise DataError(f"a video of (T, H, W)={tuple(video.shape[2:])} gives a latent grid {latent} that "
                             f"does not fit the patch size {self._patch}")
        return tuple(n // p for n, p in zip(latent, self._patch))

    def prepare_batch(self, batch: dict, generator: Generators = None) -> dict:
        """Adds "masks": one `BlockMask` per family (short-range, long-range) for this batch, each clip's drawn
        from `generator` or, by default, keyed on (run seed, step, clip) (`patchworld.randomness`); then the
        future mask when `future_frames` is set (the long-range family stays last when there is none)."""
        video = batch["video"]
        grid = self.token_grid(video)
        masks = []
        if self.block_masks:
            generator = self._mask_generators(batch) if generator is None else generator
            masks = sample_masks(video.shape[0], grid, self.families, generator)
        if self.future_frames is not None:
            masks.append(future_mask(video.shape[0], grid, self.future_frames))
        return batch | {"masks": masks}

    # ---- encoders ----------------------------------------------------------------------------------
    def target_features(self, world, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target branch on the full clip: features (B, N, D) before the loss's layer norm, positions."""
        if self.anti_collapse == "ema":
            with torch.no_grad():
                tokens, positions = self.target_encoder.embed(latents)
                return self.target_encoder(tokens, positions), positions
        tokens, positions = world.backbone.embed(latents)  # the online encoder is its own target
        return world.backbone(tokens, positions), positions

    def masked_predictions(self, world, latents: torch.Tensor, masks: list[BlockMask]):
        """Yields, per mask family, (prediction (B, Nt, D), target indices (B, Nt), dense) where `dense` is what
        `dense_context_error` reads (context indices, predictions at the context, context and target positions)
        with `context_loss`, else None."""
        tokens, positions = world.backbone.embed(latents)  # (B, N, D), (B, N, 3)
        for mask in masks:
            context, target = mask.context.to(tokens.device), mask.target.to(tokens.device)
            context_positions, target_positions = gather_tokens(positions, context), gather_tokens(positions, target)
            encoded = world.backbone(gather_tokens(tokens, context), context_positions)  # (B, Nc, D)
            if self.context_loss:
                prediction, at_context = self.predictor(encoded, context_positions, target_positions, with_context=True)
                yield prediction, target, (context, at_context, context_positions, target_positions)
            else:
                yield self.predictor(encoded, context_positions, target_positions), target, None  # (B, Nt, D)

    def dense_context_error(self, normed: torch.Tensor, context: torch.Tensor, at_context: torch.Tensor,
                            context_positions: torch.Tensor, target_positions: torch.Tensor) -> torch.Tensor:
        """V-JEPA 2.1's loss on the visible tokens (B,): L1 to the target features at each context token,
        weighted context_loss / sqrt(distance to the nearest target token, at least 1)."""
        distance = torch.cdist(context_positions.float(), target_positions.float()).amin(-1).clamp_min(1.0)  # (B, Nc)
        error = (at_context.float() - gather_tokens(normed, context)).abs().mean(-1)  # (B, Nc)
        return (self.context_loss * error / distance.sqrt()).mean(-1)

    def losses(self, world, video: torch.Tensor, masks: list[BlockMask]) -> dict[str, torch.Tensor]:
        """Per-sample L1 loss (B,) averaged over families, plus the raw tensors the monitors need."""
        latents = world.tokenizer.encode(video)  # (B, c, t, h, w)
        target, _ = self.target_features(world, latents)  # (B, N, D)
        normed = F.layer_norm(target.float(), target.shape[-1:])  # (B, N, D)
        per_sample, predictions = [], []
        for prediction, index, dense in self.masked_predictions(world, latents, masks):
            error = (prediction.float() - gather_tokens(normed, index)).abs()  # (B, Nt, D)
            per_sample.append(error.mean(dim=(1, 2)) + (self.dense_context_error(normed, *dense) if dense else 0))
            predictions.append(prediction)
        return {"per_sample": torch.stack(per_sample).mean(0), "target": target, "prediction": predictions[-1]}

    # ---- steps ------------------------------------------------------------------------------------
    def _masks(self, batch: dict) -> list[BlockMask]:
        return batch["masks"] if "masks" in batch else self.prepare_batch(batch)["masks"]

    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        out = self.losses(world, batch["video"], self._masks(batch))
        prediction_loss = out["per_sample"].mean()
        result = {"prediction_loss": prediction_loss}
        if self.anti_collapse == "ema":
            result["momentum"] = torch.tensor(self.momentum)
        if self.anti_collapse == "sigreg":
            result["sigreg"] = sigreg(out["target"], self.sigreg_slices, generator=batch_generator(world, "sigreg"))
            result["loss"] = (1 - self.sigreg_weight) * prediction_loss + self.sigreg_weight * result["sigreg"]
        else:
            result["loss"] = prediction_loss
        if world.training and self.monitor_every and self.steps % self.monitor_every == 0:
            with torch.no_grad():
                stats = collapse_statistics(out["target"].detach(), out["prediction"].detach())
            self.last_monitors = {name: float(value) for name, value in stats.items()}
            self.last_monitor_step = self.steps
            result |= {f"monitor/{name}": value for name, value in stats.items()}
        if world.training:
            self.steps += 1
        return result

    def validation_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        out = self.losses(world, batch["video"], self._masks(batch))
        return {"loss": out["per_sample"].mean(), **collapse_statistics(out["target"], out["prediction"])}

    def momentum_at(self, progress: float) -> float:
        """EMA momentum after `progress` (0..1) of training: linear from ema[0] to ema[1]."""
        start, end = self.ema
        return start + (end - start) * min(max(progress, 0.0), 1.0)

    @torch.no_grad()
    def update_target(self, world, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * context encoder, parameter by parameter."""
        target = list(self.target_encoder.parameters())
        online = [p.detach() for p in world.backbone.parameters()]
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1 - momentum)

    def init_share(self, steps: int) -> float:
        """How much of its random initialisation the EMA target encoder still holds after a run of `steps`
        optimizer steps (the product of the momenta; the target starts as a copy of the random init). Its
        features are what `predict`, the probes and `compare` read, so a short run at V-JEPA's long-run
        schedule (0.998 -> 1.0) leaves them part random: 48% after 730 steps, 22% after 1500."""
        return math.exp(sum(math.log(max(self.momentum_at(s / steps), 1e-12)) for s in range(1, steps + 1)))

    def on_train_batch_end(self, world, progress: float) -> None:
        self.momentum = self.momentum_at(progress)
        if self.anti_collapse == "ema":
            self.update_target(world, self.momentum)

    # ---- representation API ----------------------------------------------------------------------
    def features(self, world, video: torch.Tensor, depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Target-encoder features (the online encoder without EMA) after `depth` blocks (None: all):
        tokens (B, N, D), positions (B, N, 3)."""
        encoder = self.target_encoder if self.anti_collapse == "ema" else world.backbone
        tokens, positions = encoder.embed(world.tokenizer.encode(video))
        return encoder(tokens, positions, depth=depth), positions

    def future_error(self, world, window: torch.Tensor, past: int) -> torch.Tensor:
        """L1 error (B,) of the predictor at the target positions of the frames from `past` on, given the
        context encoder's features of the frames before it, against the target encoder's layer-normed
        features of the whole window (the training loss, with the future as the masked block)."""
        latents = world.tokenizer.encode(window)  # (B, c, t, h, w)
        target, positions = self.target_features(world, latents)  # (B, N, D), (B, N, 3)
        normed = F.layer_norm(target.float(), target.shape[-1:])
        context, future = split_past_future(world, positions, past)  # (B, Nc), (B, Nf)
        tokens, _ = world.backbone.embed(latents)
        context_positions = gather_tokens(positions, context)
        encoded = world.backbone(gather_tokens(tokens, context), context_positions)  # (B, Nc, D)
        prediction = self.predictor(encoded, context_positions, gather_tokens(positions, future))  # (B, Nf, D)
        return (prediction.float() - gather_tokens(normed, future)).abs().mean(dim=(1, 2))

    def callbacks(self) -> list[pl.Callback]:
        """The `CollapseMonitor` (one instance per objective, so its alarms can be read after a run) and, with an
        EMA target, `TargetInitShare` (how much random init the target will keep at the end of the run)."""
        return [self.collapse_monitor] + ([TargetInitShare()] if self.anti_collapse == "ema" else [])


class TargetInitShare(pl.Callback):
    """Logs at the start of training how much of its random initialisation the EMA target encoder will still
    hold at the end of the run (`VJEPA.init_share` of the run's steps), when that is more than `min_share`: the
    momentum schedule was made for long runs, and on short ones the features read after training come from a
    partly random encoder. Information, not an alarm: a faster schedule measured no better (docs/vjepa.md)."""

    def __init__(self, min_share: float = 0.05):
        self.min_share = min_share
        self.share: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        objective, steps = pl_module.objective, trainer.estimated_stepping_batches
        if not math.isfinite(steps) or steps <= 0:
            return
        self.share = objective.init_share(int(steps))
        if self.share > self.min_share:
            rank_zero_info(f"VJEPA: with ema {list(objective.ema)} over {int(steps)} steps the EMA target encoder, whose "
                           f"features are read after training, will keep {self.share:.0%} of its random "
                           "initialisation (docs/vjepa.md, \"The EMA schedule and short runs\")")


class CollapseMonitor(pl.Callback):
    """Warns loudly when the V-JEPA collapse monitors cross their thresholds.

    A representation has collapsed when different inputs map to (nearly) the same features. The monitors
    are checked whenever the objective computes them (every `monitor_every` training steps) once
    `grace_steps` have passed; an alarm is raised when

    * target_std < min_target_std: channels of the target features barely vary across tokens and clips;
    * predictor_std < min_predictor_std: the predictor outputs (about) the same vector everywhere;
    * effective_rank < min_rank: pooled clip features span (about) one direction (RankMe is 1 at worst);
    * cosine_similarity > max_cosine: pooled clip features all point the same way;
    * any monitor is not finite.

    The defaults are measured on tiny ViTs over SyntheticWorld (docs/vjepa.md): a randomly initialised or
    healthy encoder has target_std ~0.3-1, predictor_std >= 0.01, rank ~2 or more and cosine ~0.99
    (mean-pooled features share a large common component, so cosine alone is a weak signal); the
    deliberately collapsing control reaches target_std < 0.05, rank < 1.15 and cosine > 0.9999 within
    ~10 steps. Each alarm is logged at WARNING level with a banner, emitted as a RuntimeWarning and kept in
    `alarms` as (step, monitor, value).
    """

    rules = {
        "target_std": ("min_target_std", "<"), "predictor_std": ("min_predictor_std", "<"),
        "effective_rank": ("min_rank", "<"), "cosine_similarity": ("max_cosine", ">"),
    }

    def __init__(self, min_target_std: float = 0.1, min_predictor_std: float = 0.005, min_rank: float = 1.5,
                 max_cosine: float = 0.999, grace_steps: int = 0):
        self.min_target_std, self.min_predictor_std = min_target_std, min_predictor_std
        self.min_rank, self.max_cosine, self.grace_steps = min_rank, max_cosine, grace_steps
        self.alarms: list[tuple[int, str, float]] = []
        self._seen = -1

    def check(self, step: int, monitors: dict[str, float]) -> list[tuple[int, str, float]]:
        """The alarms raised by one set of monitor values (also appended to `alarms`)."""
        raised = []
        for name, value in monitors.items():
            if name not in self.rules:
                continue
            threshold_name, direction = self.rules[name]
            threshold = getattr(self, threshold_name)
            crossed = value < threshold if direction == "<" else value > threshold
            if crossed or not math.isfinite(value):
                raised.append((step, name, value))
        self.alarms += raised
        return raised

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        objective = pl_module.objective
        step = getattr(objective, "last_monitor_step", -1)
        if step == self._seen or step < self.grace_steps:
            return
        self._seen = step
        raised = self.check(step, objective.last_monitors)
        if raised and trainer.is_global_zero:
            detail = "; ".join(f"{name}={value:.4g} ({' '.join(self.rules[name][::-1])} "
                               f"{getattr(self, self.rules[name][0])})" for _, name, value in raised)
            message = (f"\n{'!' * 80}\n!! REPRESENTATION COLLAPSE suspected at step {step}: {detail}\n"
                       f"!! the encoder maps different clips to the same features; see docs/vjepa.md\n{'!' * 80}")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=1)
