"""What rectified flow and DDPM share: frame conditioning, the task mixture, the sampling loop with
classifier-free guidance, predict, features and surprise. `Flow` and `DDPM` only say how to noise, what the
network predicts, which timesteps to train on and how one sampler step moves.

Both objectives write a noisy latent as ``x_t = alpha(t) * x_0 + sigma(t) * noise`` with continuous
t in [0, 1] (1 = pure noise) and train the backbone (a `DiT`) on a linear target of (x_0, noise).

Frame conditioning (one mechanism for every task): the user gives *pixel* frames; each is mapped to the
latent frame that carries it (`Tokenizer.latent_frame_of`). Those latent frames stay clean at every step:
they are overwritten with the encoded given frames, the backbone sees them with timestep 0 and a mask
channel, and they are left out of the loss. After decoding, the given pixel frames are pasted back, so
they come out exactly as given. The whole repertoire (`TASKS`) is this mechanism: a loop is a connect whose
given frames are the model's own sample rolled by half its length, a long video is one extend_forward per
window, and an edit (SDEdit) is the same sampling loop started from a noised video instead of pure noise.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from patchworld import ComponentError, DataError, Objective, unpatchify
from patchworld.contracts import check_generative_backbone
from patchworld.randomness import Generators, draw, keyed_generator, of_sample, sample_generators

from .repa import Alignment, RepresentationAlignment, captured_output

@dataclass(frozen=True)
class Task:
    """A generative task: which frames of an n-frame clip are given (kept exactly) and the model fills in the
    rest. The one description both training (on latent frames, k drawn per clip) and sampling (on pixel
    frames, k = `context_frames`) read, so a new task is one entry of `TASKS`.

    At predict time the given frames are filled from conditioning files (`take`), or, for a loop, from the
    model's own text-to-video sample rolled by half its length. An edit gives no frames: it starts sampling
    from its file's video noised to `strength` (SDEdit) instead of from pure noise."""

    description: str
    given: Callable[[int, int], list[int]]  # (frames n, context k) -> the given frame indices
    uses_context: bool = False  # whether k (1 .. max_context(n) frames of context) matters
    max_context: Callable[[int], int] = lambda n: n - 1  # the most context frames that leave some to generate
    files: tuple[int, ...] = (1,)  # how many conditioning files predict accepts
    # (n, k, files) -> for each file, the frame indices (negative: from its end) that fill the given frames in
    # order (for an edit: all n frames, the video to edit)
    take: Callable[[int, int, int], list[list[int]]] = lambda n, k, files: [list(range(k))]
    strength: float | None = None  # an edit's default noise level, in (0, 1]
    loop: bool = False  # the given frames come from the model's own t2v sample, rolled by half its length


def _connect_frames(n: int, k: int) -> list[int]:
    return [*range(k), *range(n - k, n)]


TASKS: dict[str, Task] = {
    "t2v": Task("nothing: text to video", lambda n, k: [], files=(0,), take=lambda n, k, files: []),
    "i2v": Task("the first frame: image to video", lambda n, k: [0], take=lambda n, k, files: [[0]]),
    "extend_forward": Task("the first `context_frames` frames: continue a video (its first frames open the clip)",
                           lambda n, k: list(range(k)), True),
    "extend_backward": Task("the last `context_frames` frames: what led up to a video (its first frames close the "
                            "clip)", lambda n, k: list(range(n - k, n)), True),
    "interpolate": Task("the first and last frames: fill in between (the first and last frames of one video, or "
                        "the first of one file and the last of another)", lambda n, k: [0, n - 1], files=(1, 2),
                        take=lambda n, k, files: [[0, -1]] if files == 1 else [[0], [-1]]),
    "connect": Task("the first and last `context_frames` frames: a transition from the end of one video (its last "
                    "frames open the clip) to the start of another (its first frames close it)", _connect_frames,
                    True, lambda n: (n - 1) // 2, files=(2,),
                    take=lambda n, k, files: [list(range(-k, 0)), list(range(k))]),
    "loop": Task("connect's frames, from the model's own text-to-video sample rolled by half its length: a seamless "
                 "loop (its last frame leads into its first)", _connect_frames, True, lambda n: (n - 1) // 2,
                 files=(0,), take=lambda n, k, files: [], loop=True),
    # edit's default strength 0.6: the lowest of the measured sweep at which a recoloured prompt shows its new
    # colour in over 90% of edits while every subject's track stays within 3 px of the source's (over all colour
    # pairs: 85% and 90%; docs/generation.md, "Editing a video")
    "edit": Task("nothing: a video noised to `strength` is denoised under a new prompt (SDEdit)", lambda n, k: [],
                 take=lambda n, k, files: [list(range(n))], strength=0.6),
}
DEFAULT_MIXTURE = {"t2v": 0.6, "i2v": 0.15, "extend_forward": 0.1, "extend_backward": 0.05, "interpolate": 0.1}


DEFAULT_CONTEXT_FRAMES = 4


def context_of(task: str, frames: int, context_frames: int | None) -> int:
    """The context k a task takes on a `frames`-frame clip: `context_frames`, or by default 4 frames, fewer where
    the clip must keep some to generate (a loop or a connect on 8 frames: 3)."""
    if context_frames is not None:
        return context_frames
    return max(1, min(DEFAULT_CONTEXT_FRAMES, TASKS[task].max_context(frames)))


def task_frames(task: str, frames: int, context_frames: int | None = None) -> list[int]:
    """The pixel-frame indices a task gives for a `frames`-frame clip (context: `context_of`)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if frames < 2 and TASKS[task].given(2, 1):
        raise DataError(f"task {task!r} needs a clip of at least 2 frames, got {frames}")
    most, context_frames = TASKS[task].max_context(frames), context_of(task, frames, context_frames)
    if TASKS[task].uses_context and not 1 <= context_frames <= most:
        raise DataError(f"context_frames={context_frames} is out of range for task {task!r} on a {frames}-frame "
                        f"clip: give 1 to {most} (some frames must be left to generate)")
    return TASKS[task].given(frames, context_frames)


def check_frame_indices(indices: list[int], frames: int, what: str = "given frames") -> list[int]:
    """Raise a DataError unless every index is a valid pixel frame of a `frames`-frame clip."""
    bad = [i for i in indices if not 0 <= int(i) < frames]
    if bad:
        raise DataError(f"{what} {bad} out of range for a {frames}-frame clip: valid pixel-frame indices are 0..{frames - 1}")
    return sorted({int(i) for i in indices})


def given_mask(indices: list[int], frames: int, batch: int = 1) -> torch.Tensor:
    """Pixel-frame indices -> (batch, frames) bool mask."""
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[:, check_frame_indices(indices, frames)] = True
    return mask


def latent_clean_mask(tokenizer, given: torch.Tensor) -> torch.Tensor:
    """(B, T) bool given pixel frames -> (B, t) bool clean latent frames (a latent frame is clean when it
    carries any given pixel frame)."""
    frames = given.shape[1]
    latent = torch.tensor([tokenizer.latent_frame_of(f) for f in range(frames)], device=given.device)
    t = tokenizer.latent_frame_of(frames - 1) + 1
    clean = torch.zeros(given.shape[0], t, dtype=torch.bool, device=given.device)
    return clean.index_put_((torch.nonzero(given, as_tuple=True)[0], latent[torch.nonzero(given, as_tuple=True)[1]]),
                            torch.tensor(True, device=given.device))


def fill_from_given(video: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Replace every non-given frame of video (B, C, T, H, W) with the nearest given frame of the same clip,
    so a latent frame that mixes given and unknown pixel frames encodes only what was given."""
    out = video.clone()
    position = torch.arange(given.shape[1], device=video.device)
    for b in range(video.shape[0]):
        frames = torch.nonzero(given[b]).flatten()
        if len(frames):
            nearest = frames[(position[:, None] - frames[None]).abs().argmin(1)]  # (T,)
            out[b] = video[b][:, nearest]
    return out


def training_clean_mask(batch: int, latent_frames: int, mixture: dict[str, float],
                        generator: Generators = None) -> torch.Tensor:
    """Sample a task per clip from `mixture` and return which latent frames it keeps clean, (B, t) bool.
    `generator`: one torch generator for the batch or one per clip."""
    clean = torch.zeros(batch, latent_frames, dtype=torch.bool)
    if latent_frames < 2:
        return clean  # images: text-to-image only
    names, weights = zip(*mixture.items())
    weights = torch.tensor(weights, dtype=torch.float)
    for b in range(batch):  # nothing is drawn that is not used (one task: no draw; k only where it matters)
        g = of_sample(generator, b)
        task = TASKS[names[int(torch.multinomial(weights, 1, generator=g))] if len(names) > 1 else names[0]]
        most = task.max_context(latent_frames)
        k = int(torch.randint(1, most + 1, (), generator=g)) if task.uses_context and most >= 1 else 0  # 1 .. most
        clean[b, task.given(latent_frames, k)] = True
    return clean


class GenerativeObjective(Objective):
    """Shared machinery of `Flow` and `DDPM` (not registered itself).

    Args:
        caption_dropout: fraction of training captions replaced by "" (the unconditional caption that
            classifier-free guidance contrasts with).
        steps: sampling steps at predict time.
        guidance: classifier-free guidance scale (1 = no guidance).
        mixture: training task mixture {task: weight}; tasks: the keys of `TASKS` (loop trains what connect
            does, edit what t2v does).
        predict_task: what to condition on at predict time when the batch does not say (e.g. predicting on
            SyntheticWorld clips: ``i2v`` animates their first frame, ``edit`` re-draws them).
        context_frames: frames given by the extend, connect and loop tasks (default: 4, or fewer where the
            clip must keep some to generate; `context_of`).
        seed: noise seed at predict time (each clip's noise depends on seed and its index).
        progress: show a progress bar while sampling.
        feature_timestep: noise level of the clips whose hidden states `features` returns.
        feature_depth: the block whose hidden states `features` returns (None: the last).
        repa: align an early DiT block's hidden states with a frozen world model's features of the same clip
            (REPA, `patchworld_plugins.repa.Alignment`: teacher, random_init, depth, weight); None: off.
    """

    trains_on_latents = True  # every step goes through world.latents(batch)

    def __init__(self, caption_dropout: float = 0.1, steps: int = 25, guidance: float = 3.0,
                 mixture: dict[str, float] | None = None, predict_task: str = "t2v", context_frames: int | None = None,
                 seed: int = 0, progress: bool = True, feature_timestep: float = 0.25,
                 feature_depth: int | None = None, repa: Alignment | None = None):
        super().__init__()
        self.mixture = dict(DEFAULT_MIXTURE if mixture is None else mixture)
        unknown = set(self.mixture) - set(TASKS)
        if unknown or not self.mixture or min(self.mixture.values()) < 0:
            raise ComponentError(f"{type(self).__name__}.mixture {self.mixture}: keys must be tasks "
                                 f"({', '.join(TASKS)}) with non-negative weights")
        if predict_task not in TASKS:
            raise ComponentError(f"{type(self).__name__}.predict_task {predict_task!r}; valid tasks: {', '.join(TASKS)}")
        if not 0 <= caption_dropout <= 1:
            raise ComponentError(f"{type(self).__name__}.caption_dropout must be in [0, 1], got {caption_dropout}")
        self.caption_dropout, self.steps, self.guidance = caption_dropout, steps, guidance
        self.predict_task, self.context_frames, self.seed, self.progress = predict_task, context_frames, seed, progress
        self.feature_timestep, self.feature_depth = feature_timestep, feature_depth
        self.repa, self.alignment = repa, None

    def bind(self, world) -> None:
        check_generative_backbone(world, type(self).__name__)  # the backbone is a patchworld.GenerativeBackbone
        if self.repa is not None:
            self.alignment = RepresentationAlignment(self.repa, world.backbone.dim, len(world.backbone.blocks))

    # ---- what a subclass defines ------------------------------------------------------------------
    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha(t), sigma(t) with x_t = alpha x_0 + sigma noise."""
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network predicts: a linear function of (x_0, noise) at time t."""
        raise NotImplementedError

    def training_timesteps(self, batch: int, tokens: int, device, generator: Generators = None) -> torch.Tensor:
        """t (B,) in (0, 1] for a training batch whose clips have `tokens` tokens (row b drawn from
        generator b when given one per clip, see `patchworld.randomness.draw`)."""
        raise NotImplementedError

    def schedule(self, steps: int, tokens: int) -> torch.Tensor:
        """Sampling times (steps + 1,) from noise (near 1) down to 0."""
        raise NotImplementedError

    def from_network(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The backbone's output for x_t at times t as the prediction `target` describes (unchanged unless the
        network is trained to output something else, e.g. `Flow`'s x-prediction)."""
        return output

    def step(self, x: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
             model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """One sampler step from time t to t_next, given the prediction at (x, t); `model(x, t)` is there for
        samplers that evaluate the network again within the step (e.g. Heun)."""
        raise NotImplementedError

    # ---- shared: the network call ---------------------------------------------------------------
    @staticmethod
    def _broadcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=like.device, dtype=torch.float32)
        return t.reshape(-1, *([1] * (like.dim() - 1))) if t.dim() else t

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.coefficients(self._broadcast(t, x0))
        return alpha * x0 + sigma * noise

    def denoise(self, world, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor | None,
                context: torch.Tensor | None, context_mask: torch.Tensor | None) -> torch.Tensor:
        """The backbone's prediction for latents x_t (B, c, t, h, w) at times t (B,); clean (B, t) bool."""
        backbone = world.backbone
        frames = x_t.shape[2]
        clean = torch.zeros(x_t.shape[0], frames, dtype=torch.bool, device=x_t.device) if clean is None else clean
        tokens, positions = backbone.embed(x_t, clean)  # (B, N, D), (B, N, 3)
        grid = backbone.patch_embed.grid(x_t)
        pt = backbone.patch_size[0]
        token_clean = clean.view(clean.shape[0], grid[0], pt).all(-1)  # (B, t/pt): every latent frame given
        token_clean = token_clean.repeat_interleave(grid[1] * grid[2], dim=1)  # (B, N)
        out = backbone(tokens, positions, t, context, context_mask,
                       clean=token_clean if bool(token_clean.any()) else None, head=True)  # (B, N, P)
        return self.from_network(unpatchify(out, grid, backbone.patch_size).float(), x_t.float(), t)  # (B, c, t, h, w)

    def encode_captions(self, world, captions: list[str] | None, batch: int, cached: dict | None = None):
        """Conditioning tokens and mask for `captions` (None: `batch` empty captions), reusing the caption
        embeddings a `cached` batch holds (`WorldModel.condition`)."""
        return world.condition(list(captions) if captions is not None else [""] * batch, cached)

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # the tokenizer is fixed here (train a VAE with its own recipe)
            latents = world.latents(batch).float()  # (B, c, t, h, w), cached or encoded now
        B, t_lat = latents.shape[0], latents.shape[2]
        # every draw is keyed on (run seed, step or the validation key, clip, stream): patchworld.randomness
        clean = training_clean_mask(B, t_lat, self.mixture, sample_generators(world, batch, "task"))  # (B, t)
        clean = clean.to(latents.device)
        captions = batch.get("caption") or [""] * B
        if self.training and self.caption_dropout > 0:
            dropped = draw(torch.rand, sample_generators(world, batch, "caption_dropout"), B)  # (B,)
            captions = ["" if drop < self.caption_dropout else c for drop, c in zip(dropped.tolist(), captions)]
        context, context_mask = self.encode_captions(world, captions, B, batch)
        noise = draw(torch.randn, sample_generators(world, batch, "noise"), B, *latents.shape[1:])
        noise = noise.to(latents.device)  # (B, c, t, h, w)
        tokens = math.prod(world.backbone.patch_embed.grid(latents))
        t = self.training_timesteps(B, tokens, latents.device, sample_generators(world, batch, "timestep"))  # (B,)
        frame_clean = clean[:, None, :, None, None]  # (B, 1, t, 1, 1)
        x_t = torch.where(frame_clean, latents, self.noised(latents, noise, t))
        aligned = self.alignment is not None
        with captured_output(world.backbone.blocks[self.alignment.depth - 1]) if aligned else nullcontext() as hidden:
            prediction = self.denoise(world, x_t, t, clean, context, context_mask)
        weight = (~frame_clean).float().expand_as(latents)
        loss = ((prediction - self.target(latents, noise, t)).pow(2) * weight).sum() / weight.sum().clamp(min=1)
        out = {"loss": loss, "clean_fraction": clean.float().mean()}
        if aligned:
            if "video" not in batch:
                raise ComponentError("repa needs the batch's pixel clips for its teacher; a latent cache holds only "
                                     "latents: train without the cache, or without repa")
            alignment = self.alignment.loss(hidden[0], batch["video"], world.backbone.patch_embed.grid(latents))
            out |= {"loss": loss + self.alignment.weight * alignment, "denoising_loss": loss, "repa_loss": alignment}
        return out

    def validation_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        # out of training the draws use patchworld.randomness's fixed validation key: the same tasks, noise
        # and timesteps every validation; the loss is the denoising loss alone, comparable with or without repa
        out = self.training_step(world, batch)
        return {"loss": out.get("denoising_loss", out["loss"])}

    # ---- sampling -------------------------------------------------------------------------------
    def sample_loop(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                    steps: int, tokens: int = 256, clean_latents: torch.Tensor | None = None,
                    clean: torch.Tensor | None = None, progress: bool | None = None,
                    start: float = 1.0) -> torch.Tensor:
        """Integrate from `noise` at t=`start` to t=0. `model(x, t)` returns the prediction for x at scalar time
        t; where `clean` (broadcastable to x) is True, x is held at `clean_latents`. Below 1, `start` (SDEdit)
        keeps only the schedule's times below it, so `noise` is then a clean signal noised to `start` and the
        integration costs about `start` x `steps` steps."""
        def held(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the model, with the given frames kept
            return model(torch.where(clean, clean_latents, x) if clean is not None else x, t)

        x = noise
        times = self.schedule(steps, tokens).to(noise.device)
        if start < 1:
            times = torch.cat([times.new_tensor([start]), times[times < start]])
        show = self.progress if progress is None else progress
        for i in tqdm(range(len(times) - 1), desc=f"{type(self).__name__} sampling", disable=not show, leave=False):
            if clean is not None:
                x = torch.where(clean, clean_latents, x)
            x = self.step(x, model(x, times[i]), times[i], times[i + 1], held)
        return torch.where(clean, clean_latents, x) if clean is not None else x

    @torch.no_grad()
    def generate(self, world, captions: list[str] | None, video: torch.Tensor, given: torch.Tensor | None = None,
                 steps: int | None = None, guidance: float | None = None, seeds: list[int] | None = None,
                 progress: bool | None = None, strength: float = 1.0) -> torch.Tensor:
        """Generate clips shaped like video (B, 3, T, H, W), keeping its frames where given (B, T) is True.
        With `strength` below 1 (SDEdit), sampling starts from video's own latents noised to t = strength
        with the seeded noise instead of from pure noise.

        Returns (B, 3, T, H, W) in [-1, 1]; the given frames are returned unchanged.
        """
        B, _, T, H, W = video.shape
        steps, guidance = steps or self.steps, self.guidance if guidance is None else guidance
        grid = world.tokenizer.latent_grid(T, H, W)
        given = torch.zeros(B, T, dtype=torch.bool) if given is None else given.bool()
        given = given.to(video.device)
        if captions is not None and any(not c.strip() for c in captions):
            raise DataError("empty prompt: every prompt needs some text (use guidance=1 for unconditional samples)")
        check_strength(strength)
        shape = (world.tokenizer.latent_channels, *grid)
        seeds = seeds if seeds is not None else [self.seed + i for i in range(B)]
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        noise = noise.to(video.device)  # (B, c, t, h, w)
        if strength < 1:  # SDEdit: the video's own latents, noised to t = strength
            noise = self.noised(world.tokenizer.encode(video).float(), noise, torch.tensor(strength))
        clean = clean_latents = None
        if bool(given.any()):
            clean = latent_clean_mask(world.tokenizer, given)  # (B, t)
            clean_latents = world.tokenizer.encode(fill_from_given(video, given)).float()
        guided = world.conditioner is not None and guidance != 1
        if guided:  # the captions encoded once, as one batch of [conditional, unconditional]
            context, context_mask = self.encode_captions(world, list(captions or [""] * B) + [""] * B, 2 * B)
        else:
            context, context_mask = self.encode_captions(world, captions, B)

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return self.denoise(world, x, t.expand(B), clean, context, context_mask)
            pair_clean = clean.repeat(2, 1) if clean is not None else None
            cond, uncond = self.denoise(world, x.repeat(2, 1, 1, 1, 1), t.expand(2 * B), pair_clean,
                                        context, context_mask).chunk(2)  # one network call for both
            return uncond + guidance * (cond - uncond)

        tokens = math.prod(grid) // math.prod(world.backbone.patch_size)
        latents = self.sample_loop(model, noise, steps, tokens, clean_latents,
                                   clean[:, None, :, None, None] if clean is not None else None, progress, strength)
        out = world.tokenizer.decode(latents).float().clamp(-1, 1)  # (B, 3, T, H, W)
        return torch.where(given[:, None, :, None, None], video.float(), out)

    def generate_long(self, world, captions: list[str] | None, video: torch.Tensor, given: torch.Tensor,
                      window: int | None = None, overlap: int | None = None, seeds: list[int] | None = None,
                      **options) -> torch.Tensor:
        """`generate` for video (B, 3, N, H, W) of any length, window by window: each `window` frames long
        (default: the clip length the model trained on, `WorldModel.clip_frames`; else N, one window), each
        after the first an extend_forward of the frames made so far that fall in it: the last `overlap`
        (default window // 2) frames of the previous window (the last window, moved back to end at frame N,
        may get more), together with any frames given (B, N) there. `options` go to every `generate`."""
        B, N = video.shape[0], video.shape[2]
        if window is None and world.clip_frames is None and N > 1:
            rank_zero_warn(f"the model's checkpoint does not record the clip length it trained on, so all {N} frames "
                           f"are made in one window; give --data.window (its training clip length) for longer videos")
        window = window or world.clip_frames or N
        if N <= window:
            return self.generate(world, captions, video, given, seeds=seeds, **options)
        overlap = window // 2 if overlap is None else overlap
        if not 1 <= overlap < window:
            raise DataError(f"overlap {overlap} is out of range for {window}-frame windows: give 1 to {window - 1}")
        seeds = seeds if seeds is not None else [self.seed + i for i in range(B)]
        starts = window_starts(N, window, overlap)
        rank_zero_info(f"{N} frames in {len(starts)} windows of {window} frames (overlap {overlap})")
        out, known = video.clone(), given.bool().clone()  # (B, 3, N, H, W); (B, N): given or made so far
        for j, start in enumerate(starts):
            part = slice(start, start + window)
            window_seeds = seeds if j == 0 else [keyed_generator(s, j, 0, "window").initial_seed() for s in seeds]
            out[:, :, part] = self.generate(world, captions, out[:, :, part], known[:, part], seeds=window_seeds,
                                            **options)
            known[:, part] = True
        return out

    def predict_step(self, world, batch: dict) -> dict[str, Any]:
        """Generate for a batch: "video" (B, 3, T, H, W) holds the given frames (or the video to edit); the
        batch may also say "given" (B, T), "task" (default `predict_task`), "strength", "window", "overlap"."""
        video = batch["video"]
        B, T = video.shape[0], video.shape[2]
        name = batch.get("task") or self.predict_task
        given = batch.get("given")
        if given is None:
            given = given_mask(task_frames(name, T, self.context_frames), T, B)
        index = batch.get("index")
        seeds = [self.seed + int(i) for i in index] if index is not None else None
        captions, long = batch.get("caption"), {"window": batch.get("window"), "overlap": batch.get("overlap")}
        if TASKS[name].loop:  # the given frames: a text-to-video sample rolled by half, its end->start seam mid-clip
            video = self.generate_long(world, captions, video, torch.zeros_like(given), seeds=seeds, **long)
            video = video.roll(T // 2, dims=2)  # (B, 3, T, H, W): frame i is the sample's (i - T // 2) mod T
        strength = batch.get("strength") or TASKS[name].strength or 1.0
        return {"video": self.generate_long(world, captions, video, given, seeds=seeds, strength=strength, **long)}

    # ---- representations and surprise for the comparison ---------------------------------------
    def features(self, world, video: torch.Tensor, depth: int | None = None,
                 timestep: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """DiT hidden states (B, N, D) after `depth` blocks (default `feature_depth`; None: all) of the clip
        noised to `timestep` (default `feature_timestep`) with seeded noise, uncaptioned."""
        depth = self.feature_depth if depth is None else depth
        timestep = self.feature_timestep if timestep is None else timestep
        latents = world.tokenizer.encode(video).float()
        noise = seeded_noise(latents, self.seed)
        times = torch.full((latents.shape[0],), timestep, device=latents.device)
        x_t = self.noised(latents, noise, times)
        clean = torch.zeros(x_t.shape[0], x_t.shape[2], dtype=torch.bool, device=x_t.device)
        tokens, positions = world.backbone.embed(x_t, clean)
        context, context_mask = self.encode_captions(world, None, x_t.shape[0])
        return world.backbone(tokens, positions, times, context, context_mask, depth=depth), positions

    def feature_options(self, world) -> dict[str, list]:
        """Every depth, at a low and a middle noise level."""
        return {"depth": list(range(1, len(world.backbone.blocks) + 1)), "timestep": [0.1, 0.5]}

    def future_error(self, world, window: torch.Tensor, past: int,
                     times: tuple[float, ...] = (0.25, 0.5, 0.75)) -> torch.Tensor:
        """Extend-forward denoising error (B,): the latent frames carrying pixel frames from `past` on are
        noised to each of `times` with seeded noise (the same for every clip), the earlier ones are given
        clean (the extension task's conditioning), uncaptioned; squared error of the prediction on the
        future latent frames, averaged over the noise levels."""
        latents = world.tokenizer.encode(window).float()  # (B, c, t, h, w)
        B, t_lat = latents.shape[0], latents.shape[2]
        past_latent = world.tokenizer.latent_frame_of(past - 1) + 1
        clean = (torch.arange(t_lat, device=latents.device) < past_latent).expand(B, -1)  # (B, t)
        frame_clean = clean[:, None, :, None, None]
        context, context_mask = self.encode_captions(world, None, B)
        errors = []
        for k, t in enumerate(times):
            noise = seeded_noise(latents, self.seed + k)
            ts = torch.full((B,), t, device=latents.device)
            x_t = torch.where(frame_clean, latents, self.noised(latents, noise, ts))
            prediction = self.denoise(world, x_t, ts, clean, context, context_mask)
            errors.append((prediction - self.target(latents, noise, ts))[:, :, past_latent:].pow(2).mean(dim=(1, 2, 3, 4)))
        return torch.stack(errors).mean(0)


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """The first frame of each window that covers `frames` frames, `overlap` frames apart (the last window
    moved back to end at the last frame)."""
    return [*range(0, frames - window, window - overlap), frames - window]


def check_strength(strength: float) -> float:
    """Raise a DataError unless `strength` (the noise level an edit starts from) is in (0, 1]."""
    if not 0 < strength <= 1:
        raise DataError(f"strength {strength} is out of range: give a value in (0, 1] (the noise level an edit "
                        f"starts from; 1 = from pure noise, small = close to the source)")
    return strength


def seeded_noise(latents: torch.Tensor, seed: int) -> torch.Tensor:
    """The same Gaussian noise for every clip of latents (B, c, t, h, w), drawn from `seed`."""
    noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(seed))
    return noise.to(latents.device).expand_as(latents)


__all__ = ["TASKS", "DEFAULT_MIXTURE", "GenerativeObjective", "Task", "task_frames", "given_mask",
           "latent_clean_mask", "check_frame_indices", "check_strength", "fill_from_given", "training_clean_mask",
           "window_starts"]
