"""Chapter 4 — the DiT and frame conditioning (image to video, extension). Your file.

Fill in the three functions below (replace each `raise NotImplementedError(...)`), then grade them:

    patchworld course check 4                 # or, by hand:
    python -m pytest -q docs/course/ch04_dit

`python docs/course/ch04_dit/run.py --student` trains a small DiT with the real `Flow` objective and then
animates a still image and extends a clip with your functions. The reference is `solutions.py`.
"""
from __future__ import annotations

import torch

from patchworld_plugins.generation import given_mask, task_frames  # noqa: F401  (for extend_forward_step)


def clean_latent_frames(given: torch.Tensor, tokenizer) -> torch.Tensor:
    """Which latent frames are *clean* (kept exactly, never noised) when some pixel frames are given.

    A latent frame is clean when it carries at least one given pixel frame; `tokenizer.latent_frame_of(f)`
    names the latent frame that carries pixel frame f (for `Pixels` it is f itself; for a causal VAE with
    2x temporal compression pixel frame 0 -> latent 0, 1-2 -> 1, 3-4 -> 2, ...).

    Args:
        given: (B, T) bool, True where pixel frame f of clip b is given.
        tokenizer: a `patchworld.Tokenizer`.

    Returns:
        (B, t) bool with t = latent_frame_of(T - 1) + 1.
    """
    raise NotImplementedError(
        "make latent = [tokenizer.latent_frame_of(f) for f in range(T)], a (B, latent[-1] + 1) bool zeros tensor, "
        "and set True at (b, latent[f]) for every given (b, f) (given.nonzero(as_tuple=True) lists them)"
    )


def conditioned_input(objective, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                      clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The DiT's training input under frame conditioning, and where the loss counts.

    Every latent frame is noised to its clip's time t with ``objective.noised`` (for rectified flow
    ``(1 - t) x_0 + t noise``), except the clean ones, which stay exactly the clean latents. The loss
    counts only the frames that are not clean (the model is never asked to predict what it was given).

    Args:
        objective: a `GenerativeObjective` (`Flow` or `DDPM`), for its `noised(x0, noise, t)`.
        latents: (B, c, t, h, w) clean latents x_0.
        noise: (B, c, t, h, w) Gaussian noise.
        t: (B,) noise level per clip in [0, 1] (1 = pure noise).
        clean: (B, t) bool clean latent frames.

    Returns:
        x_t (B, c, t, h, w) and the loss weight (B, c, t, h, w) float: 1 where the loss counts, 0 on clean frames.
    """
    raise NotImplementedError(
        "reshape clean to (B, 1, t, 1, 1) so it broadcasts; x_t = torch.where(that, latents, "
        "objective.noised(latents, noise, t)); weight = (~that).float().expand_as(latents)"
    )


def extend_forward_step(objective, world, clip: torch.Tensor, context_frames: int, window: int,
                        seeds: list[int], steps: int | None = None, captions: list[str] | None = None) -> torch.Tensor:
    """One window of extending a video forward: the last `context_frames` frames of `clip` open a new
    `window`-frame clip (kept exactly, the `extend_forward` task of the task table) and the model
    generates the rest.

    Build the window video (its first `context_frames` frames are clip's last ones; the others are
    placeholders that only fix the shape), ask the task table which frames `extend_forward` gives
    (`task_frames`) and turn them into a mask (`given_mask`), then call
    ``objective.generate(world, captions, video, given, steps=steps, seeds=seeds)``.

    Args:
        objective: the world's `GenerativeObjective`.
        world: the `WorldModel`.
        clip: (B, 3, T, H, W) in [-1, 1], T >= context_frames.
        context_frames: how many of its last frames to continue from (1 .. window - 1).
        window: frames of the new clip.
        seeds: one noise seed per clip.
        steps: sampler steps (None: the objective's default).
        captions: one prompt per clip (None: uncaptioned).

    Returns:
        (B, 3, window, H, W): the first `context_frames` frames equal clip[:, :, -context_frames:] exactly.
    """
    raise NotImplementedError(
        "video = clip.new_zeros(B, 3, window, H, W); copy clip[:, :, -context_frames:] into its first frames; "
        "given = given_mask(task_frames('extend_forward', window, context_frames), window, B); "
        "return objective.generate(world, captions, video, given, steps=steps, seeds=seeds)"
    )
