"""The four interchangeable parts of a world model, plus the text conditioner.

Tensor conventions (one for the whole project):
* video:     (B, C, T, H, W) float in [-1, 1]
* latents:   (B, c, t, h, w)
* tokens:    (B, N, D) with integer positions (B, N, 3) = (t, h, w), time-major
* a batch:   dict with "video", optionally "caption" (list[str]), "labels" (dict of (B,) long), ...

Every part is an `nn.Module` so its weights live in the one checkpoint. `bind(world)` is called once by
`WorldModel.__init__` (tokenizer, conditioner, backbone, objective, decoder, in that order) so a part can
size itself from the others (e.g. a backbone's patch embedding from the tokenizer's latent channels).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import DataError
from .patches import PatchEmbed3d, Size3, as_size3

if TYPE_CHECKING:
    from pytorch_lightning import Callback

    from .model import WorldModel


class Component(nn.Module):
    """Shared behaviour of every part."""

    def bind(self, world: WorldModel) -> None:
        """Called once by WorldModel after the parts before this one are bound. Default: nothing."""


class Tokenizer(Component):
    """Pixels (B, 3, T, H, W) <-> latents (B, c, t, h, w): the "video compression network".

    `compression` = (temporal, height, width) factors. A `causal` tokenizer encodes frame 0 on its own,
    so T = 1 + k * temporal (images are 1-frame videos); otherwise T = k * temporal.
    """

    latent_channels: int = 3
    compression: Size3 = (1, 1, 1)
    causal: bool = False

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def latent_grid(self, frames: int, height: int, width: int) -> Size3:
        """The latent (t, h, w) for a video of this size, or a DataError stating which sizes are valid."""
        ct, ch, cw = self.compression
        if self.causal:
            t_ok, t = (frames - 1) % ct == 0, 1 + (frames - 1) // ct
            valid_t = f"T = 1 + k*{ct} (1, {1 + ct}, {1 + 2 * ct}, ...)"
        else:
            t_ok, t = frames % ct == 0, frames // ct
            valid_t = f"T a multiple of {ct}"
        if not (t_ok and frames >= 1 and height % ch == 0 and width % cw == 0):
            raise DataError(
                f"{type(self).__name__} cannot encode a video of (T, H, W)=({frames}, {height}, {width}): "
                f"valid sizes have {valid_t}, H a multiple of {ch} and W a multiple of {cw}"
            )
        return (t, height // ch, width // cw)

    def pixel_frames(self, latent_frames: int) -> int:
        """How many pixel frames `latent_frames` latent frames decode to."""
        ct = self.compression[0]
        return 1 + (latent_frames - 1) * ct if self.causal else latent_frames * ct

    def latent_frame_of(self, pixel_frame: int) -> int:
        """Index of the latent frame that carries pixel frame `pixel_frame`."""
        ct = self.compression[0]
        return (pixel_frame + ct - 1) // ct if self.causal else pixel_frame // ct


class Backbone(Component):
    """Spacetime-patch tokens (+ conditions) -> features.

    A backbone owns its tubelet embedding (`embed`: latents -> tokens, positions) and maps tokens at
    arbitrary integer positions to features of width `dim` (`forward`). Working from positions rather
    than a fixed table means any grid size and any subset of tokens (masking) work.
    """

    def __init__(self, dim: int, patch_size: int | tuple[int, int, int] | list[int] = (2, 8, 8)):
        super().__init__()
        self.dim = dim
        self.patch_size = as_size3(patch_size)
        self.in_channels: int | None = None
        self.patch_embed: PatchEmbed3d | None = None

    def bind(self, world: WorldModel) -> None:
        self.in_channels = world.tokenizer.latent_channels
        self.patch_embed = PatchEmbed3d(self.in_channels, self.dim, self.patch_size)

    def embed(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, c, t, h, w) -> tokens (B, N, D), positions (B, N, 3)."""
        return self.patch_embed(latents)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, **conditions: Any) -> torch.Tensor:
        raise NotImplementedError


class Conditioner(Component):
    """Captions -> conditioning tokens (B, L, dim) and a padding mask (B, L), True where real."""

    dim: int

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Objective(Component):
    """How the model learns and, if generative, samples. All method-specific logic lives here.

    The WorldModel delegates its steps to the objective, passing itself so the objective can reach the
    tokenizer, backbone and conditioner.
    """

    def prepare_batch(self, batch: dict) -> dict:
        """Runs on the host before the batch moves to the device (e.g. sample masks). Default: unchanged."""
        return batch

    def training_step(self, world: WorldModel, batch: dict) -> dict[str, torch.Tensor]:
        """Return a dict with "loss" and any scalars to log."""
        raise NotImplementedError

    def validation_step(self, world: WorldModel, batch: dict) -> dict[str, torch.Tensor]:
        """Scalars to log on the validation set. Default: the training loss without gradients."""
        return self.training_step(world, batch)

    def predict_step(self, world: WorldModel, batch: dict) -> dict[str, Any]:
        """What the decoder writes for this batch. Default: frozen features."""
        tokens, positions = self.features(world, batch["video"])
        return {"tokens": tokens, "positions": positions}

    def on_train_batch_end(self, world: WorldModel, progress: float) -> None:
        """After each optimizer step; `progress` in [0, 1] is the fraction of training done."""

    def features(self, world: WorldModel, video: torch.Tensor, depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen representation of a video for probes: tokens (B, N, D), positions (B, N, 3), read after
        `depth` backbone blocks (None: all of them)."""
        latents = world.tokenizer.encode(video)
        tokens, positions = world.backbone.embed(latents)
        return world.backbone(tokens, positions, depth=depth), positions

    def feature_options(self, world: WorldModel) -> dict[str, list]:
        """Where `features` can be read, as keyword arguments -> candidate values; the comparison's layer
        search tries every combination on validation (the same search for every model). Default: every depth."""
        return {"depth": list(range(1, len(world.backbone.blocks) + 1))}

    def future_error(self, world: WorldModel, window: torch.Tensor, past: int) -> torch.Tensor:
        """Error (B,) of predicting the frames of window (B, C, T, H, W) from `past` onwards out of the
        frames before it, in the model's own space. Every clip must be scored alike (fixed seeds, no
        dependence on the rest of the batch): this is what `surprise` slides over a clip."""
        raise NotImplementedError(f"{type(self).__name__} does not define a predictive surprise score")

    def surprise(self, world: WorldModel, video: torch.Tensor, context: int) -> torch.Tensor:
        """Predictive surprise over time, (B, T), higher = more surprising (Garrido et al. 2025): a window of
        `context` frames slides over the clip and the model predicts the next step (the frames of one token
        row) from it with `future_error`; frames before `context` are NaN."""
        B, T = video.shape[0], video.shape[2]
        step = prediction_step(world, context, T)
        curve = torch.full((B, T), float("nan"), device=video.device)
        for start in range(context, T - step + 1, step):
            window = video[:, :, start - context : start + step]  # (B, C, context + step, H, W)
            curve[:, start : start + step] = self.future_error(world, window, context).float()[:, None]
        return curve

    def callbacks(self) -> list[Callback]:
        """Lightning callbacks this objective needs (e.g. monitors). Default: none."""
        return []


class Decoder(Component):
    """Turns predict outputs into what the user gets (mp4 files, feature files, class labels)."""

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        """Write this batch's outputs under `directory`; return the paths written."""
        raise NotImplementedError


def prediction_step(world: WorldModel, context: int, frames: int) -> int:
    """Pixel frames of one future token row after `context` frames: the smallest step for which a
    (context + step)-frame window has one more backbone token row than the context alone."""
    from .errors import PatchworldError

    pt = world.backbone.patch_size[0] if world.backbone is not None else 1

    def rows(n: int) -> int | None:
        try:
            t = world.tokenizer.latent_grid(n, *world.tokenizer.compression[1:])[0]
        except PatchworldError:
            return None
        return t // pt if t % pt == 0 else None

    if rows(context) is None:
        raise PatchworldError(f"surprise: a context of {context} frames does not fill whole token rows of this "
                              f"model (tokenizer {type(world.tokenizer).__name__}, temporal patch {pt}); "
                              "change the physics context")
    for step in range(1, frames - context + 1):
        if rows(context + step) is not None and rows(context + step) > rows(context):
            return step
    raise PatchworldError(f"surprise: {frames}-frame clips leave no room to predict after a {context}-frame context; "
                          "use longer clips or a shorter context")


def split_past_future(world: WorldModel, positions: torch.Tensor, past: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices of a window's past (token rows made only of the frames before `past`) and of its future,
    from positions (B, N, 3): (B, Nc) and (B, Nf) long, in token order."""
    pt = world.backbone.patch_size[0]
    past_rows = (world.tokenizer.latent_frame_of(past - 1) + 1) // pt
    is_past = positions[0, :, 0] < past_rows  # (N,)
    B = positions.shape[0]
    return (torch.nonzero(is_past).flatten().expand(B, -1), torch.nonzero(~is_past).flatten().expand(B, -1))
