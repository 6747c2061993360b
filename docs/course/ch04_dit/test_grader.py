"""Grader for chapter 4: your frame conditioning against the real one (`plugins/generation.py`), and your
extension step run through the real `Flow` sampler on a tiny DiT."""
from __future__ import annotations

import torch

from patchworld import WorldModel
from patchworld_plugins.ddpm import DDPM
from patchworld_plugins.dit import DiT
from patchworld_plugins.flow import Flow
from patchworld_plugins.generation import given_mask, latent_clean_mask, task_frames
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vae import VAE


def random_given(batch: int, frames: int, seed: int) -> torch.Tensor:
    """(B, T) bool: a random set of given pixel frames per clip (some clips none, one all)."""
    given = torch.rand(batch, frames, generator=torch.Generator().manual_seed(seed)) < 0.3
    given[0] = False
    given[-1] = True
    return given


def check_clean(exercises, tokenizer, frames: int) -> None:
    given = random_given(5, frames, seed=frames)
    yours = exercises.clean_latent_frames(given, tokenizer)
    expected = latent_clean_mask(tokenizer, given)
    assert torch.is_tensor(yours) and yours.dtype == torch.bool, "clean_latent_frames must return a bool tensor"
    assert yours.shape == expected.shape, (
        f"for {frames} pixel frames and {type(tokenizer).__name__} the mask must be (B, t) = {tuple(expected.shape)}, "
        f"got {tuple(yours.shape)}; t is latent_frame_of(T - 1) + 1")
    bad = (yours != expected).nonzero().tolist()
    assert not bad, (
        f"{type(tokenizer).__name__}: (clip, latent frame) {bad[:4]} differ from the framework's; a latent frame is "
        "clean exactly when it carries a given pixel frame (tokenizer.latent_frame_of)")


def test_clean_latent_frames_on_pixels(exercises):
    check_clean(exercises, Pixels(), frames=8)


def test_clean_latent_frames_on_a_causal_vae(exercises):
    vae = VAE(compression=(2, 4, 4))  # causal: pixel 0 -> latent 0, pixels 1-2 -> 1, 3-4 -> 2, ...
    check_clean(exercises, vae, frames=9)
    i2v = given_mask(task_frames("i2v", 9), 9)  # image to video: only pixel frame 0
    assert exercises.clean_latent_frames(i2v, vae).tolist() == [[True, False, False, False, False]], (
        "i2v on a causal VAE keeps only latent frame 0 clean (it carries pixel frame 0 alone)")


def check_conditioned(exercises, objective) -> None:
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 5, 2, 2, generator=g), torch.randn(3, 4, 5, 2, 2, generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    clean = torch.tensor([[True, False, False, False, False], [False] * 5, [True, True, False, False, True]])
    out = exercises.conditioned_input(objective, latents, noise, t, clean)
    assert isinstance(out, tuple) and len(out) == 2, "conditioned_input must return (x_t, weight)"
    x_t, weight = out
    name = type(objective).__name__
    assert x_t.shape == latents.shape and weight.shape == latents.shape, (
        f"x_t and weight must both be (B, c, t, h, w) = {tuple(latents.shape)}; got {tuple(x_t.shape)} and "
        f"{tuple(weight.shape)}")
    frame = clean[:, None, :, None, None].expand_as(latents)
    assert torch.equal(x_t[frame], latents[frame]), f"{name}: the clean frames of x_t must be exactly the clean latents"
    noised = objective.noised(latents, noise, t)
    assert torch.allclose(x_t[~frame], noised[~frame], atol=1e-6), (
        f"{name}: the other frames must be objective.noised(latents, noise, t), each clip at its own t")
    assert torch.equal(weight.float(), (~frame).float()), (
        "weight must be 1 on frames that are not clean and 0 on clean ones (the model is not graded on what it was given)")


def test_conditioned_input_under_flow(exercises):
    check_conditioned(exercises, Flow())


def test_conditioned_input_under_ddpm(exercises):
    check_conditioned(exercises, DDPM())  # another noise schedule: use objective.noised, not a formula of your own


def test_extend_forward_step_runs_the_real_sampler(exercises):
    torch.manual_seed(0)
    world = WorldModel(tokenizer=Pixels(), backbone=DiT(dim=32, depth=1, heads=2, patch_size=(1, 4, 4)),
                       objective=Flow(steps=3, progress=False))
    with torch.no_grad():  # a little noise so the zero-initialised DiT predicts something
        for p in world.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    world.eval()
    clip = torch.rand(2, 3, 6, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = exercises.extend_forward_step(world.objective, world, clip, 2, 5, seeds=[3, 4], steps=3)
    assert torch.is_tensor(out) and out.shape == (2, 3, 5, 8, 8), (
        f"the new window must be (B, 3, window, H, W) = (2, 3, 5, 8, 8); got "
        f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    assert torch.equal(out[:, :, :2], clip[:, :, -2:]), (
        "the window's first context_frames frames must be the clip's last ones, exactly (give them to generate)")
    video = torch.zeros(2, 3, 5, 8, 8)
    video[:, :, :2] = clip[:, :, -2:]
    expected = world.objective.generate(world, None, video, given_mask(task_frames("extend_forward", 5, 2), 5, 2),
                                        steps=3, seeds=[3, 4])
    assert torch.allclose(out, expected, atol=1e-5), (
        "the generated frames differ from Flow.generate's with the extend_forward task: pass the given mask from the "
        "task table, the seeds, the steps and the captions (here None)")
