"""`VAE`: a causal 3D convolutional KL autoencoder — the video compression network — and
`VAEReconstruction`, the objective that trains it.

Causal means every convolution looks only at the current and earlier frames (time is zero-padded on
the past side), so frame 0 is encoded on its own: an image is a 1-frame video and
both go through the same weights. A video of T = 1 + k*ct frames becomes 1 + k latent frames; the
decoder mirrors it (latent frame 0 -> pixel frame 0, latent frame j -> pixel frames (j-1)*ct+1 .. j*ct).

Downstream recipes see normalised latents: `encode` returns the posterior mean shifted and scaled per
channel by statistics measured on the training data (buffers stored with the weights), and `decode`
undoes it. `checkpoint=` loads a trained VAE (a patchworld `.ckpt` or an exported `.safetensors`) and
freezes it, so any recipe can use it as its tokenizer.

Long and large videos are encoded and decoded in bounded memory with `tile_frames` (time chunks, exact:
causality lets each convolution carry the frames it needs into the next chunk, see `streaming`) and
`tile_size` / `tile_overlap` (overlapping spatial tiles blended with linear ramps, approximate).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from patchworld import ComponentError, DataError, Objective, PatchworldError, Tokenizer, grid_positions
from patchworld.patches import Size3, as_size3
from patchworld.randomness import Generators, batch_generator, draw, sample_generators

from patchworld.checkpoints import read_part
from patchworld.errors import require_positive

#: constructor arguments that fix the architecture; stored with the weights so a checkpoint rebuilds it
ARCHITECTURE = ("compression", "latent_channels", "width", "multipliers", "blocks")


# ---- building blocks ------------------------------------------------------------------------------
class CausalConv3d(nn.Conv3d):
    """A Conv3d that zero-pads time only on the past side, so output frame i depends on input frames
    <= i*stride only. Space is zero-padded symmetrically ("same" size at stride 1).

    Inside `streaming` it takes a clip in consecutive time chunks: instead of zeros, each chunk after the
    first is preceded by the last kt - st input frames of the chunk before (`past`), which is exactly what
    the whole clip's convolution sees there."""

    streaming: bool = False  # set by `streaming`
    past: torch.Tensor | None = None  # streaming: the previous chunk's frames the next one needs; None: at frame 0

    def __init__(self, in_channels: int, out_channels: int, kernel: int | Size3 = 3, stride: int | Size3 = 1):
        kt, kh, kw = as_size3(kernel)
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=as_size3(stride), padding=(0, kh // 2, kw // 2))
        self.time_padding = kt - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, T, H, W) -> (B, C_out, 1 + (T-1)//st, H/sh, W/sw); a later chunk (T a multiple of st): T//st
        if self.past is None:
            x = F.pad(x, (0, 0, 0, 0, self.time_padding, 0))  # (B, C_in, kt-1 + T, H, W), zeros before frame 0
        else:
            x = torch.cat([self.past, x], dim=2)  # (B, C_in, kt-st + T, H, W)
        if self.streaming:
            # (B, C_in, kt-st, H, W), a copy: a view would keep the whole chunk alive
            self.past = x[:, :, x.shape[2] - (self.kernel_size[0] - self.stride[0]) :].clone()
        return super().forward(x)


@contextlib.contextmanager
def streaming(module: nn.Module) -> Iterator[None]:
    """Within the block, consecutive calls of `module` take consecutive time chunks of one clip: the first
    chunk starts at frame 0, every later one holds a whole number of the module's temporal strides (the
    VAE's temporal compression). Its causal convolutions carry the frames they need from chunk to chunk, so
    the chunks' outputs, concatenated along time, equal the whole clip's output, in the memory of one chunk."""
    convs = [m for m in module.modules() if isinstance(m, CausalConv3d)]
    for conv in convs:
        conv.streaming, conv.past = True, None
    try:
        yield
    finally:
        for conv in convs:
            conv.streaming, conv.past = False, None


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame on its own (groups of 4 channels, at most 32 groups): statistics never
    mix frames, so the model stays causal (a GroupNorm over the whole clip would not)."""

    def __init__(self, channels: int):
        super().__init__(min(32, max(1, channels // 4)), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W); with channels-last memory both reshapes are free views
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        return super().forward(frames).reshape(b, t, c, h, w).transpose(1, 2)  # (B, C, T, H, W)


class ResBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1x1 projected) skip; the last conv starts at zero."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(in_channels), CausalConv3d(in_channels, out_channels)
        self.norm2, self.conv2 = FrameNorm(out_channels), CausalConv3d(out_channels, out_channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, T, H, W) -> (B, C_out, T, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def space_to_channels(x: torch.Tensor, factor: Size3, first: bool = True) -> torch.Tensor:
    """Causal space/time-to-channel reshape: (B, C, T, H, W) -> (B, C*st*sh*sw, 1 + (T-1)/st, H/sh, W/sw).
    Frame 0 is repeated st-1 times on the past side, so output frame 0 holds frame 0 alone. A later time
    chunk of a clip (`first=False`, T a multiple of st) has no frame 0: (B, C*st*sh*sw, T/st, H/sh, W/sw)."""
    st, sh, sw = factor
    if first:
        x = torch.cat([x[:, :, :1].expand(-1, -1, st - 1, -1, -1), x], dim=2)  # (B, C, st*(1 + (T-1)/st), H, W)
    return rearrange(x, "b c (t st) (h sh) (w sw) -> b (c st sh sw) t h w", st=st, sh=sh, sw=sw)


def channels_to_space(x: torch.Tensor, factor: Size3, first: bool = True) -> torch.Tensor:
    """The inverse of `space_to_channels`: (B, C*st*sh*sw, t, h, w) -> (B, C, 1 + (t-1)*st, h*sh, w*sw)
    (a later time chunk, `first=False`: (B, C, t*st, h*sh, w*sw))."""
    st, sh, sw = factor
    x = rearrange(x, "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)", st=st, sh=sh, sw=sw)
    return x[:, :, st - 1 :] if first else x  # drop the st-1 copies of frame 0


def resample_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, ...) -> (B, channels, ...) without parameters: neighbouring channels averaged (to fewer) or
    repeated (to more); with a whole ratio every output is the mean of C/channels inputs, or a copy of one."""
    c = x.shape[1]
    if c == channels:
        return x
    last = x.movedim(1, -1)  # (B, ..., C): a free view in channels-last memory
    flat = last.reshape(-1, 1, c)
    flat = F.adaptive_avg_pool1d(flat, channels) if channels < c else F.interpolate(flat, size=channels, mode="nearest")
    return flat.reshape(*last.shape[:-1], channels).movedim(-1, 1)


class Downsample(nn.Module):
    """A strided causal conv plus a parameter-free shortcut (space-to-channel, then channel averaging), so
    each stage learns a residual over a plain average pool ("residual autoencoding", DC-AE): a freshly
    built VAE already reconstructs a blurred clip, and training skips the long phase in which a plain
    autoencoder only predicts the background."""

    def __init__(self, in_channels: int, out_channels: int, factor: Size3):
        super().__init__()
        self.factor, self.out_channels = factor, out_channels
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W) -> (B, C_out, 1 + (T-1)//st, H/sh, W/sw) (a later chunk of `streaming`: T//st)
        first = self.conv.past is None  # the clip's first time chunk (frame 0 is in it)
        shortcut = resample_channels(space_to_channels(x, self.factor, first), self.out_channels)
        return self.conv(x) + shortcut


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by (st, sh, sw) then a causal conv, plus the mirror shortcut of
    `Downsample` (channel repetition, then channel-to-space). In time, frame 0 stays one frame and every
    later latent frame becomes st frames: t -> 1 + (t-1)*st (the inverse of the encoder)."""

    def __init__(self, in_channels: int, out_channels: int, factor: Size3):
        super().__init__()
        self.factor, self.out_channels = factor, out_channels
        self.conv = CausalConv3d(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, t, h, w) -> (B, C_out, 1 + (t-1)*st, h*sh, w*sw) (a later chunk of `streaming`: t*st)
        first = self.conv.past is None  # the clip's first time chunk (frame 0 is in it)
        drop = self.factor[0] - 1 if first else 0
        up = F.interpolate(x, scale_factor=self.factor, mode="nearest")[:, :, drop:]  # drop copies of frame 0
        repeated = resample_channels(x, self.out_channels * math.prod(self.factor))
        return self.conv(up) + channels_to_space(repeated, self.factor, first)


def stage_factors(compression: Size3) -> list[Size3]:
    """Per-stage (t, h, w) down-sampling factors (each 1 or 2) that multiply to `compression`; time is
    compressed in the first stages, where it saves the most work."""
    steps = [int(math.log2(c)) for c in compression]
    return [tuple(2 if i < n else 1 for n in steps) for i in range(max(steps))]  # type: ignore[misc]


def per_stage(values: list[int], stages: int) -> list[int]:
    """One value per stage: the list cut to `stages`, its last value repeated if it is short."""
    values = list(values) or [1]
    return (values + [values[-1]] * stages)[:stages]


class Encoder(nn.Module):
    def __init__(self, widths: list[int], factors: list[Size3], blocks: list[int], latent_channels: int):
        super().__init__()
        self.conv_in = CausalConv3d(3, widths[0])
        self.stages = nn.ModuleList()
        for i, factor in enumerate(factors):
            layers = [ResBlock(widths[i], widths[i]) for _ in range(blocks[i])]
            layers.append(Downsample(widths[i], widths[i + 1], factor))
            self.stages.append(nn.Sequential(*layers))
        self.mid = nn.Sequential(*[ResBlock(widths[-1], widths[-1]) for _ in range(blocks[-1])])
        self.norm_out = FrameNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * latent_channels)
        self.latent_channels = latent_channels
        # start with a narrow posterior (std ~0.05): with unit-variance noise on small initial means the
        # decoder would see mostly noise, and the tiny KL weight lowers the variance only very slowly
        with torch.no_grad():
            self.conv_out.bias[latent_channels:] = -6.0

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # video: (B, 3, T, H, W) -> moments (B, 2c, t, h, w)
        x = self.conv_in(video) + resample_channels(video, self.conv_in.out_channels)  # (B, w0, T, H, W)
        for stage in self.stages:
            x = stage(x)  # each stage divides (T-1, H, W) by its factor
        x = self.mid(x)  # (B, w_last, t, h, w)
        moments = self.conv_out(F.silu(self.norm_out(x)))  # (B, 2c, t, h, w)
        shortcut = resample_channels(x, self.latent_channels)  # (B, c, t, h, w), added to the mean only
        return moments + F.pad(shortcut, (0, 0, 0, 0, 0, 0, 0, self.latent_channels))


class Decoder(nn.Module):
    def __init__(self, widths: list[int], factors: list[Size3], blocks: list[int], latent_channels: int):
        super().__init__()
        self.conv_in = CausalConv3d(latent_channels, widths[-1])
        self.mid = nn.Sequential(*[ResBlock(widths[-1], widths[-1]) for _ in range(blocks[-1])])
        self.stages = nn.ModuleList()
        for i in reversed(range(len(factors))):
            layers = [Upsample(widths[i + 1], widths[i], factors[i])]
            layers += [ResBlock(widths[i], widths[i]) for _ in range(blocks[i])]
            self.stages.append(nn.Sequential(*layers))
        self.norm_out = FrameNorm(widths[0])
        self.conv_out = CausalConv3d(widths[0], 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (B, c, t, h, w) -> video (B, 3, T, H, W)
        x = self.conv_in(z) + resample_channels(z, self.conv_in.out_channels)  # (B, w_last, t, h, w)
        x = self.mid(x)
        for stage in self.stages:
            x = stage(x)  # each stage multiplies (t-1, h, w) by its factor
        return self.conv_out(F.silu(self.norm_out(x))) + resample_channels(x, 3)  # (B, 3, T, H, W)


# ---- the tokenizer ----------------------------------------------------------------------------------
class VAE(Tokenizer):
    """Causal 3D convolutional KL autoencoder (the video compression network), frozen when loaded.

    video (B, 3, T, H, W) <-> latents (B, c, t, h, w).

    Args:
        compression: (t, h, w) down-sampling factors, powers of two, e.g. (4, 8, 8) or (2, 4, 4).
            Valid inputs have T = 1 + k*t frames, H a multiple of h and W a multiple of w.
        latent_channels: channels c of the latent grid.
        width: channels of the full-resolution stage; stage i has width * multipliers[i].
        multipliers: width multiplier per stage (there is one stage per down-sampling step plus the
            lowest-resolution one; the last value is repeated if the list is short).
        blocks: residual blocks per stage, one number for all or a list like `multipliers`.
        checkpoint: a patchworld checkpoint of a VAE fit run (``.ckpt``, keys ``tokenizer.*``) or an
            exported ``.safetensors``. Its weights and latent statistics are loaded, its architecture
            replaces the arguments above, and the VAE is frozen (no gradients, always in eval mode).
        tile_frames: `encode` and `decode` take a clip in time chunks of this many pixel frames (after
            frame 0; a multiple of the temporal compression), the causal convolutions carrying the frames
            they need from chunk to chunk (`streaming`): the same result as the whole clip (to float
            rounding) in the memory of one chunk. None (default): the whole clip at once.
        tile_size: `encode` and `decode` work on spatial tiles of at most this many pixels (H and W; a
            multiple of the spatial compression), overlapping by at least `tile_overlap` pixels and blended
            with linear ramps there. Approximate (zero padding at tile edges, per-tile normalisation
            statistics; docs/data.md measures the cost). None (default): whole frames.
        tile_overlap: pixels neighbouring spatial tiles share (a multiple of the spatial compression).
    Training (`posterior`, `decode_raw`) never tiles.
    """

    causal = True
    #: layout of the weights and activations: channels-last-3d runs oneDNN's 3D convolutions several times
    #: faster on a CPU than the default layout (`python benchmarks/vae_throughput.py --formats ...` compares)
    memory_format = torch.channels_last_3d

    def __init__(self, compression: int | tuple[int, int, int] = (2, 4, 4), latent_channels: int = 8, width: int = 32,
                 multipliers: tuple[int, ...] = (1, 2, 4), blocks: int | tuple[int, ...] = 1,
                 checkpoint: str | None = None, tile_frames: int | None = None, tile_size: int | None = None,
                 tile_overlap: int = 16):
        super().__init__()
        config = {"compression": list(as_size3(compression)), "latent_channels": latent_channels, "width": width,
                  "multipliers": list(multipliers), "blocks": [blocks] if isinstance(blocks, int) else list(blocks)}
        weights = None
        if checkpoint is not None:
            weights, stored = read_part(checkpoint)
            if not stored or stored.get("class") != "VAE":
                raise PatchworldError(f"VAE.checkpoint {checkpoint!r}: its tokenizer is not a patchworld VAE "
                                      f"(no stored VAE configuration)")
            config = {key: stored[key] for key in ARCHITECTURE}
        self.config = config
        require_positive("VAE", latent_channels=config["latent_channels"], width=config["width"])
        self.compression = as_size3(config["compression"], "VAE.compression")
        for axis, factor in zip("thw", self.compression):
            if factor < 1 or factor & (factor - 1):
                raise PatchworldError(f"VAE.compression must be powers of two; got {axis}={factor} in {self.compression}")
        self.latent_channels = config["latent_channels"]
        self.tile_frames, self.tile_size, self.tile_overlap = tile_frames, tile_size, tile_overlap
        self._check_tiles()
        factors = stage_factors(self.compression)
        widths = [config["width"] * m for m in per_stage(config["multipliers"], len(factors) + 1)]
        blocks = per_stage(config["blocks"], len(factors) + 1)
        self.encoder = Encoder(widths, factors, blocks, self.latent_channels)
        self.decoder = Decoder(widths, factors, blocks, self.latent_channels)
        # per-channel statistics of the posterior mean on training data (see `update_latent_stats`)
        self.register_buffer("latent_shift", torch.zeros(self.latent_channels))
        self.register_buffer("latent_scale", torch.ones(self.latent_channels))
        self.register_buffer("stats_updates", torch.zeros((), dtype=torch.long))
        self.to(memory_format=self.memory_format)
        self.frozen = weights is not None
        if weights is not None:
            self._load(weights, checkpoint)
            self.requires_grad_(False)
            self.eval()

    def _load(self, weights: dict[str, torch.Tensor], checkpoint: str) -> None:
        mine = self.state_dict()
        mine.pop("_extra_state", None)
        missing, unexpected = sorted(set(mine) - set(weights)), sorted(set(weights) - set(mine))
        wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in mine.items()
                 if k in weights and weights[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise PatchworldError(f"VAE.checkpoint {checkpoint!r} does not match the VAE it describes: "
                                  f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
        self.load_state_dict({**weights, "_extra_state": self.get_extra_state()})

    # the architecture travels with the weights: in a .ckpt as `tokenizer._extra_state`, in an exported
    # .safetensors as metadata
    def get_extra_state(self) -> dict:
        return {"class": "VAE", **self.config}

    def set_extra_state(self, state: dict) -> None:
        theirs = {key: state.get(key) for key in ARCHITECTURE}
        if theirs != {key: self.config[key] for key in ARCHITECTURE}:
            raise PatchworldError(f"the checkpoint's VAE has architecture {theirs}, this one {self.config}")

    def _check_tiles(self) -> None:
        ct, spatial = self.compression[0], max(self.compression[1:])
        if self.tile_frames is not None and (self.tile_frames < 1 or self.tile_frames % ct):
            raise ComponentError(f"VAE.tile_frames={self.tile_frames} must be a positive multiple of the temporal "
                                 f"compression {ct} (e.g. {8 * ct})")
        if self.tile_size is not None and (self.tile_size < 1 or self.tile_size % spatial):
            raise ComponentError(f"VAE.tile_size={self.tile_size} must be a positive multiple of the spatial "
                                 f"compression {spatial} (e.g. {16 * spatial})")
        overlap_fits = 0 <= self.tile_overlap < (self.tile_size or 0) and self.tile_overlap % spatial == 0
        if self.tile_size is not None and not overlap_fits:
            raise ComponentError(f"VAE.tile_overlap={self.tile_overlap} must be a multiple of the spatial compression "
                                 f"{spatial} and smaller than tile_size={self.tile_size}")

    def train(self, mode: bool = True) -> VAE:
        """A frozen (loaded) VAE stays in eval mode whatever the trainer asks."""
        return super().train(mode and not getattr(self, "frozen", False))

    # ---- the Tokenizer API: normalised latents -----------------------------------------------
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> normalised posterior mean (B, c, t, h, w), ~unit variance;
        in tiles when `tile_frames` / `tile_size` are set."""
        self._check_video(video)
        mean = self._tiled(video, lambda x: self._moments(x)[:, : self.latent_channels], encoding=True)
        return (mean - self._view(self.latent_shift)) / self._view(self.latent_scale)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents (B, c, t, h, w) -> video (B, 3, 1 + (t-1)*ct, h*ch, w*cw), unclamped; in tiles
        when `tile_frames` / `tile_size` are set."""
        z = latents * self._view(self.latent_scale) + self._view(self.latent_shift)
        return self._tiled(z, self.decode_raw, encoding=False)

    # ---- raw posterior (what the reconstruction objective trains) ----------------------------
    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 3, T, H, W) -> raw (un-normalised) posterior mean and log-variance, each (B, c, t, h, w)."""
        self._check_video(video)
        mean, logvar = self._moments(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """raw latents (B, c, t, h, w) -> video (B, 3, T, H, W)."""
        if z.dim() != 5 or z.shape[1] != self.latent_channels:
            raise DataError(f"VAE.decode expects latents (B, {self.latent_channels}, t, h, w); got {tuple(z.shape)}")
        return self.decoder(z.contiguous(memory_format=self.memory_format)).contiguous()

    def _check_video(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != 3:
            raise DataError(f"VAE expects video (B, 3, T, H, W) (an image is a 1-frame video: add a time axis "
                            f"with video.unsqueeze(2)); got shape {tuple(video.shape)}")
        self.latent_grid(*video.shape[2:])  # a DataError stating the valid sizes

    def _moments(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) -> posterior moments (B, 2c, t, h, w) float, mean first."""
        return self.encoder(video.contiguous(memory_format=self.memory_format)).float()

    # ---- tiles ------------------------------------------------------------------------------
    def _tiled(self, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], encoding: bool) -> torch.Tensor:
        """`run` (the encoder's mean or the decoder) over x (B, C, T, H, W), spatial tile by spatial tile and,
        within a tile, time chunk by time chunk (`streaming`); tiles are blended with linear ramps where
        they overlap. One tile and one chunk: `run(x)` itself."""
        ct, ch, cw = self.compression
        down = 1 if encoding else ct  # input frames per pixel frame
        frames = x.shape[2]
        chunk = frames if self.tile_frames is None else self.tile_frames // down  # input frames after frame 0
        rows = tile_spans(x.shape[3] * (1 if encoding else ch), self.tile_size, self.tile_overlap, ch)  # pixels
        cols = tile_spans(x.shape[4] * (1 if encoding else cw), self.tile_size, self.tile_overlap, cw)
        if len(rows) == len(cols) == 1 and frames <= 1 + chunk:
            return run(x)
        scale_in = (1, 1) if encoding else (ch, cw)  # pixels per input cell
        scale_out = (ch, cw) if encoding else (1, 1)  # pixels per output cell
        out_frames = 1 + (frames - 1) // ct if encoding else self.pixel_frames(frames)
        weight_rows = blend_weights(rows, scale_out[0])  # per tile: (rows of the tile,) output cells
        weight_cols = blend_weights(cols, scale_out[1])
        out = total = None
        for (top, bottom), weight_h in zip(rows, weight_rows):
            for (left, right), weight_w in zip(cols, weight_cols):
                tile = x[..., top // scale_in[0] : bottom // scale_in[0], left // scale_in[1] : right // scale_in[1]]
                weight = (weight_h[:, None] * weight_w[None, :]).to(x.device)  # (h_tile, w_tile) output cells
                where = (slice(top // scale_out[0], bottom // scale_out[0]),
                         slice(left // scale_out[1], right // scale_out[1]))  # the tile's output cells
                with streaming(self):
                    done = 0  # output frames written
                    for start in range(0, max(frames - 1, 1), chunk):
                        piece = run(tile[:, :, start + (start > 0) : start + 1 + chunk])  # (B, C_out, t', h', w')
                        if out is None:
                            height, width = (n * s // o for n, s, o in zip(x.shape[3:], scale_in, scale_out))
                            out = x.new_zeros(x.shape[0], piece.shape[1], out_frames, height, width, dtype=torch.float)
                            total = x.new_zeros(height, width, dtype=torch.float)
                        out[:, :, done : done + piece.shape[2], where[0], where[1]] += piece.float() * weight
                        done += piece.shape[2]
                total[where] += weight
        return (out / total).to(piece.dtype)

    @torch.no_grad()
    def update_latent_stats(self, mean: torch.Tensor, momentum: float = 0.01) -> None:
        """Fold a batch of raw posterior means (B, c, t, h, w) into the per-channel shift/scale: a running
        average over the first 1/momentum batches, then an exponential moving average."""
        if self.frozen:
            return
        values = mean.detach().float().transpose(0, 1).flatten(1)  # (c, B*t*h*w)
        rate = max(momentum, 1.0 / (int(self.stats_updates) + 1))
        self.latent_shift.lerp_(values.mean(1), rate)
        self.latent_scale.lerp_(values.std(1).clamp_min(1e-4), rate)
        self.stats_updates += 1

    def compression_ratio(self, frames: int, height: int, width: int) -> float:
        """Pixel values per latent value for a video of this size."""
        t, h, w = self.latent_grid(frames, height, width)
        return (3 * frames * height * width) / (self.latent_channels * t * h * w)

    def _view(self, stat: torch.Tensor) -> torch.Tensor:
        return stat.view(1, -1, 1, 1, 1)


def tile_spans(length: int, tile: int | None, overlap: int, step: int) -> list[tuple[int, int]]:
    """(start, stop) of the fewest tiles of `tile` that cover `length` with at least `overlap` shared by
    neighbours, evenly spread on multiples of `step` (all in pixels); one span when `tile` is None or covers it."""
    if tile is None or length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    room = (length - tile) // step  # in steps; the gaps between starts are at most tile - overlap
    return [(start, start + tile) for start in (room * i // (count - 1) * step for i in range(count))]


def blend_weights(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per span, its blending weights in cells of `scale` pixels: 1, ramping linearly down to 0 across the
    part shared with a neighbour, so that overlapping tiles cross-fade (the sum is normalised by the caller)."""
    weights = []
    for i, (start, stop) in enumerate(spans):
        weight = torch.ones((stop - start) // scale)
        before = (spans[i - 1][1] - start) // scale if i > 0 else 0  # cells shared with the previous tile
        after = (stop - spans[i + 1][0]) // scale if i + 1 < len(spans) else 0  # and with the next one
        if before > 0:
            weight[:before] *= (torch.arange(before) + 0.5) / before
        if after > 0:
            weight[len(weight) - after :] *= ((torch.arange(after) + 0.5) / after).flip(0)
        weights.append(weight)
    return weights


# ---- the objective that trains it -----------------------------------------------------------------
def psnr(reconstruction: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of videos in [-1, 1] (peak-to-peak 2, i.e. the usual PSNR on [0, 1]), (B,)."""
    mse = (reconstruction.float().clamp(-1, 1) - video.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def ssim(reconstruction: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Mean per-frame SSIM (11x11 Gaussian window, torchmetrics) of videos in [-1, 1]."""
    frames = lambda v: rearrange(v.float().clamp(-1, 1), "b c t h w -> (b t) c h w")  # noqa: E731
    return structural_similarity_index_measure(frames(reconstruction), frames(video), data_range=2.0)


class VAEReconstruction(Objective):
    """Trains a `VAE` tokenizer: L1/L2 reconstruction + KL, logging PSNR, SSIM and compression.

    The loss is L1 (+ L2) reconstruction + KL to a unit Gaussian (+ an optional gradient-difference term
    on spatial and temporal differences). Validation logs PSNR, SSIM and the
    compression ratio; `predict` returns original and reconstruction (a `VideoWriter` writes both as mp4).

    Args:
        l1_weight: weight of the mean absolute pixel error.
        l2_weight: weight of the mean squared pixel error.
        kl_weight: weight of the KL divergence (mean over latent values).
        gradient_weight: weight of the L1 error between the spatial and temporal finite differences of
            the reconstruction and of the original (sharper edges and motion); 0 turns it off.
        crop: train on random crops of this many pixels (H and W, a multiple of the spatial compression)
            for speed; validation and predict use whole frames.
        stats_momentum: momentum of the running per-channel latent statistics.
    """

    def __init__(self, l1_weight: float = 1.0, l2_weight: float = 0.0, kl_weight: float = 1e-6,
                 gradient_weight: float = 0.0, crop: int | None = None, stats_momentum: float = 0.01):
        super().__init__()
        weights = {"l1_weight": l1_weight, "l2_weight": l2_weight, "kl_weight": kl_weight, "gradient_weight": gradient_weight}
        for name, weight in weights.items():
            if weight < 0:
                raise ComponentError(f"VAEReconstruction.{name} must be >= 0, got {weight}")
        if not 0 < stats_momentum <= 1:
            raise ComponentError(f"VAEReconstruction.stats_momentum must be in (0, 1], got {stats_momentum}")
        self.l1_weight, self.l2_weight, self.kl_weight = l1_weight, l2_weight, kl_weight
        self.gradient_weight, self.crop, self.stats_momentum = gradient_weight, crop, stats_momentum

    def bind(self, world) -> None:
        if not isinstance(world.tokenizer, VAE):
            raise ComponentError(f"VAEReconstruction trains a VAE tokenizer; the recipe's tokenizer is "
                                 f"{type(world.tokenizer).__name__} (set model.tokenizer.class_path: VAE)")
        if world.tokenizer.frozen:
            raise ComponentError("VAEReconstruction got a frozen VAE (model.tokenizer.init_args.checkpoint is set): "
                                 "there is nothing to train; remove the checkpoint to train a new VAE")
        if self.crop is not None and self.crop % max(world.tokenizer.compression[1:]):
            raise ComponentError(f"VAEReconstruction.crop={self.crop} must be a multiple of the VAE's spatial "
                                 f"compression {world.tokenizer.compression[1:]}")

    def random_crop(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The same random (crop x crop) window of every clip in the batch; whole frames if they are smaller."""
        if self.crop is None:
            return video
        h, w = video.shape[-2:]
        ch, cw = min(self.crop, h), min(self.crop, w)
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        return video[..., top : top + ch, left : left + cw]

    def losses(self, vae: VAE, video: torch.Tensor, sample: bool, generator: Generators = None) -> dict[str, torch.Tensor]:
        """`sample`: decode a posterior sample (noise from `generator`, one or one per clip) instead of the mean."""
        mean, logvar = vae.posterior(video)  # (B, c, t, h, w) each
        if sample:
            noise = draw(torch.randn, generator, *mean.shape).to(mean.device)  # (B, c, t, h, w)
            z = mean + noise * (0.5 * logvar).exp()
        else:
            z = mean
        reconstruction = vae.decode_raw(z).float()  # (B, 3, T, H, W)
        error = reconstruction - video.float()
        l1, l2 = error.abs().mean(), error.pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = self.l1_weight * l1 + self.l2_weight * l2 + self.kl_weight * kl
        out = {"l1": l1, "kl": kl, "psnr": psnr(reconstruction.detach(), video).mean()}
        if self.gradient_weight:
            out["gradient"] = gradient_difference(reconstruction, video.float())
            loss = loss + self.gradient_weight * out["gradient"]
        return {"loss": loss, **out, "mean": mean, "reconstruction": reconstruction}

    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        # the crop window is shared by the batch, the posterior noise is per clip; both keyed on (run seed, step)
        video = self.random_crop(batch["video"], batch_generator(world, "crop"))
        out = self.losses(world.tokenizer, video, sample=True, generator=sample_generators(world, batch, "posterior"))
        world.tokenizer.update_latent_stats(out.pop("mean"), self.stats_momentum)
        out.pop("reconstruction")
        return out

    @torch.no_grad()
    def validation_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        vae, video = world.tokenizer, batch["video"]
        reconstruction = vae.decode(vae.encode(video)).float()  # the path downstream recipes use
        mean, logvar = vae.posterior(video)
        return {
            "loss": (reconstruction - video).abs().mean(),
            "psnr": psnr(reconstruction, video).mean(),
            "ssim": ssim(reconstruction, video),
            "kl": 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean(),
            "compression": torch.tensor(vae.compression_ratio(*video.shape[2:])),
            "latent_std": vae.encode(video).std(),
        }

    @torch.no_grad()
    def predict_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["video"]  # (B, 3, T, H, W)
        reconstruction = world.tokenizer.decode(world.tokenizer.encode(video)).float().clamp(-1, 1)
        return {"original": video, "reconstruction": reconstruction,
                "side_by_side": torch.cat([video.float(), reconstruction], dim=-1)}  # (B, 3, T, H, 2W)

    def features(self, world, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised latent grid as tokens (B, t*h*w, c) with positions (B, t*h*w, 3)."""
        latents = world.tokenizer.encode(video)  # (B, c, t, h, w)
        positions = grid_positions(*latents.shape[2:], device=video.device).expand(video.shape[0], -1, -1)
        return rearrange(latents, "b c t h w -> b (t h w) c"), positions

    def feature_options(self, world) -> dict[str, list]:
        """One place to read: the latent grid."""
        return {}


def gradient_difference(reconstruction: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Mean L1 error between finite differences along T, H and W of two (B, C, T, H, W) videos."""
    total = reconstruction.new_zeros(())
    for dim in (2, 3, 4):
        if video.shape[dim] > 1:
            total = total + (reconstruction.diff(dim=dim) - video.diff(dim=dim)).abs().mean()
    return total
