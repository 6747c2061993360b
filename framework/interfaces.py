"""The four interchangeable parts of a world model, plus the text conditioner.

Tensor conventions (one for the whole project):
* video:     (B, C, T, H, W) float in [-1, 1]
* latents:   (B, c, t, h, w)
* tokens:    (B, N, D) with integer positions (B, N, 3) = (t, h, w), time-major
* a batch:   what a datamodule yields, a dict with
             "video"   (B, 3, T, H, W) floating in [-1, 1] (required, unless "latents" is given),
             "caption" list of B str (optional),
             "labels"  dict of name -> (B,) integer tensor (optional),
             "index"   (B,) integer dataset indices, distinct within the batch (optional; the per-clip
                       randomness of `patchworld.randomness` is keyed on it), and anything else it likes.
             A batch from a latent cache (`LatentCache`) holds, instead of "video",
             "latents" (B, c, t, h, w) floating: the frozen tokenizer's encoding of its clips, which
                       objectives read through `WorldModel.latents(batch)` (so it is not encoded again),
             and with a frozen conditioner "caption_tokens" (B, L, D) and "caption_mask" (B, L) bool: the
                       conditioner's output for "caption", reused by `WorldModel.condition`. An objective
                       that reads pixels (batch["video"]) cannot train from such a batch.

Every part is an `nn.Module` so its weights live in the one checkpoint. `bind(world)` is called once by
`WorldModel.__init__` (tokenizer, conditioner, backbone, objective, decoder, in that order) so a part can
size itself from the others (e.g. a backbone's patch embedding from the tokenizer's latent channels).

Each class below states its **contract**: what it must accept and return. `WorldModel` checks the batch,
the tokenizer, the backbone and the conditioner once per stage on its first batch and every objective
step's result (`patchworld.contracts`, an error naming the component and the rule);
`patchworld.testing.check_<part>` checks all of it, and more, in a plugin's tests. Every part also
runs under bf16 autocast, round-trips through its `state_dict` (loaded with ``weights_only=True``) and
pickles (DDP starts processes with copies of it).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import DataError, PatchworldError, require_positive
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

    Contract:
    * `latent_channels` (c, an int >= 1), `compression` (three ints >= 1) and `causal` (a bool) describe it,
      and `latent_grid` (which uses them) gives the latent size of every valid video size;
    * `encode(video)`: video (B, 3, T, H, W) floating in [-1, 1] -> latents (B, c, t, h, w) floating with
      (t, h, w) = `latent_grid(T, H, W)`; each clip on its own (nothing depends on the rest of the batch);
      a causal tokenizer's latent frame 0 depends on pixel frame 0 only;
    * `decode(latents)`: (B, c, t, h, w) -> video (B, 3, `pixel_frames(t)`, h * ch, w * cw) floating.
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

    Contract:
    * `dim` (D), `patch_size` (pt, ph, pw) and `blocks` (its blocks in order, e.g. an `nn.ModuleList`:
      `depth` counts them and the comparison's layer search tries each depth) describe it;
    * `embed(latents)`: latents (B, c, t, h, w) -> tokens (B, N, D) floating and positions (B, N, 3)
      integer, the (t, h, w) of every cell of the (t/pt, h/ph, w/pw) token grid in time-major order
      (`grid_positions`), N = t*h*w / (pt*ph*pw);
    * `forward(tokens, positions, depth=None, **conditions)`: tokens (B, N, D) at positions (B, N, 3) ->
      features (B, N, D) floating, one per token, for any grid, any subset of its tokens and any order
      (a token's place comes from its position, never from its index: masked objectives pass only the
      visible tokens), each clip on its own; ``depth=k`` returns the features after the first k blocks
      (None: all of them). Conditions are optional keywords, so ``backbone(tokens, positions)`` always
      works: `VideoMAE` and `VJEPA` pass none, `Flow` and `DDPM` those of `GenerativeBackbone`.
    """

    def __init__(self, dim: int, patch_size: int | tuple[int, int, int] | list[int] = (2, 8, 8)):
        super().__init__()
        require_positive(type(self).__name__, dim=dim)
        self.dim = dim
        self.patch_size = as_size3(patch_size, f"{type(self).__name__}.patch_size")
        self.in_channels: int | None = None
        self.patch_embed: PatchEmbed3d | None = None

    def bind(self, world: WorldModel) -> None:
        self.in_channels = world.tokenizer.latent_channels
        self.patch_embed = PatchEmbed3d(self.in_channels, self.dim, self.patch_size)

    def embed(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, c, t, h, w) -> tokens (B, N, D), positions (B, N, 3)."""
        return self.patch_embed(latents)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None,
                **conditions: Any) -> torch.Tensor:
        """Features (B, N, D) of tokens (B, N, D) at positions (B, N, 3), after `depth` blocks (None: all)."""
        raise NotImplementedError


@runtime_checkable
class GenerativeBackbone(Protocol):
    """What a generative objective (`Flow`, `DDPM`: any `GenerativeObjective`) needs from its backbone, on
    top of the `Backbone` contract; `DiT` implements it. `GenerativeObjective.bind` refuses a backbone
    without it (`patchworld.contracts.check_generative_backbone`), naming what is missing.

    * `patch_values`: values per output patch, latent channels x pt x ph x pw (one patch of `patchify`);
    * `embed(latents, clean_mask)`: as `Backbone.embed`, with clean_mask (B, t) bool marking the latent
      frames that are given (kept clean: frame conditioning), or None;
    * `forward(tokens, positions, timesteps, context, context_mask, clean=None, depth=None, head=False)`,
      the first five positional: timesteps (B,) in [0, 1] (1 = pure noise; None = 0, clean), context
      (B, L, Dc) the conditioner's tokens with context_mask (B, L) (both None without a conditioner),
      clean (B, N) bool the tokens whose frames are given (None: none), ``depth`` as in `Backbone`; with
      ``head=True`` it returns the prediction (B, N, patch_values) in `patchify`'s layout instead of the
      features (B, N, D).
    """

    patch_values: int

    def embed(self, latents: torch.Tensor, clean_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, timesteps: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                clean: torch.Tensor | None = None, depth: int | None = None, head: bool = False) -> torch.Tensor:
        ...


class Conditioner(Component):
    """Captions -> conditioning tokens (B, L, dim) and a padding mask (B, L), True where real.

    Contract:
    * `dim` (an int): the width of its tokens (a backbone sizes its cross-attention from it in `bind`);
    * `forward(captions)`: B captions (a list of str; "" is the unconditional caption that classifier-free
      guidance contrasts with) -> tokens (B, L, dim) floating and mask (B, L) bool, True where a token is
      real. Every caption, "" included, has at least one real token, and a caption's real tokens do not
      depend on the other captions of the batch (padding never leaks into them).
    """

    dim: int

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Objective(Component):
    """How the model learns and, if generative, samples. All method-specific logic lives here.

    The WorldModel delegates its steps to the objective, passing itself so the objective can reach the
    tokenizer, backbone and conditioner.

    Contract:
    * `training_step` returns a dict with "loss", a 0-dim floating tensor that has a gradient, and any
      other one-element values to log; its random draws (masks, noise, timesteps) come from
      `patchworld.randomness`, so a resumed or DDP run draws the same;
    * `validation_step` returns a dict of one-element values with "loss", the same every time for the same
      batch and weights (out of training the draws use the fixed validation key);
    * `predict_step` returns a dict, what the decoder writes; `prepare_batch` returns the batch dict;
    * `features` returns tokens (B, N, D) and positions (B, N, 3) for every choice of `feature_options`,
      and `future_error`, if defined, (B,); both score each clip on its own;
    * `trains_on_latents`: True if its steps read the latents through `WorldModel.latents(batch)`, so it can
      train from a latent cache (batches with "latents" and no "video"); objectives that need the pixels
      keep False and are refused such batches on the first batch.
    """

    trains_on_latents: bool = False

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
    """Turns predict outputs into what the user gets (mp4 files, feature files, class labels).

    Contract: `write` writes files under `directory` only, each one whole (write through
    `patchworld.data.video_io.atomic_path`, so a crash leaves no half-written file), and returns their
    paths; outputs may be bf16 (predict under bf16-mixed); two batches never write the same file (name
    files by ``batch["index"]`` when the batch has it, else by `batch_index`).
    """

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        """Write this batch's outputs under `directory`; return the paths written."""
        raise NotImplementedError


class Adapter:
    """A cheap fine-tune of a trained model: a few new trainable weights added to some of its layers, every
    other weight frozen (e.g. `LoRA`; ``--model.adapter LoRA``).

    Contract:
    * `bind(world)`: called once by `WorldModel.__init__` after every part is bound; it may load the base
      weights into the world, adds the adapter's weights and leaves only them trainable (``requires_grad``);
    * `callbacks()`: Lightning callbacks it needs (e.g. one that writes its weights next to the run).
    """

    def bind(self, world: WorldModel) -> None:
        raise NotImplementedError

    def callbacks(self) -> list[Callback]:
        return []


class PromptExpander:
    """Short user prompts -> captions in the style the model trained on (Sora's prompt expansion); `Prompts`
    applies one before generating (``--data.expander NAME``).

    Contract:
    * `expand(prompts)`: a list of str -> a list of as many str, in order, each non-empty; the same prompts
      always give the same captions (no randomness), and each prompt is expanded on its own.
    """

    def expand(self, prompts: list[str]) -> list[str]:
        raise NotImplementedError


class Captioner:
    """Videos -> descriptive captions, for training sets without them (``patchworld recaption FOLDER``).

    Contract:
    * `frames` and `size` (H, W): the clip it reads from each file (resized to cover `size`, centre-cropped);
    * `caption(video)`: video (B, 3, frames, H, W) floating in [-1, 1] -> B non-empty str, each clip on its
      own, the same every time.
    """

    frames: int = 8
    size: tuple[int, int] = (32, 32)

    def caption(self, video: torch.Tensor) -> list[str]:
        raise NotImplementedError


def prediction_step(world: WorldModel, context: int, frames: int) -> int:
    """Pixel frames of one future token row after `context` frames: the smallest step for which a
    (context + step)-frame window has one more backbone token row than the context alone."""
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
