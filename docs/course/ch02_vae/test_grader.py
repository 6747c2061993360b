"""Chapter 2's grader: `patchworld course check 2`. Each test compares a function with the framework's own
(plugins/vae.py: `CausalConv3d`, `space_to_channels`, what `VAEReconstruction` computes) and names the mistake
it recognises; the last one runs a real `VAE` on your functions (`adapters.course_vae`) through the
framework's causality rule and one training step in a `WorldModel`."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from patchworld import WorldModel
from patchworld.course import expect, load_module, train
from patchworld.data import SyntheticWorld
from patchworld.randomness import draw
from patchworld.testing import check_causal
from patchworld_plugins.vae import VAE, CausalConv3d, VAEReconstruction, space_to_channels

adapters = load_module(Path(__file__).with_name("adapters.py"))

VIDEO = torch.randn(2, 3, 5, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, C, T, H, W), T = 1 + 2*2
SMALL_VAE = {"compression": (2, 4, 4), "latent_channels": 4, "width": 8, "multipliers": (1, 2, 2), "blocks": 1}


def padded_conv(conv: CausalConv3d, x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """`conv`'s weights with `before` / `after` zero frames around time (a known mistake when not kt-1, 0)."""
    kh, kw = conv.kernel_size[1:]
    return F.conv3d(F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, before, after)), conv.weight, conv.bias, conv.stride)


def test_causal_conv3d_matches_the_framework(exercises):
    torch.manual_seed(0)
    for kernel, stride in ((3, (1, 1, 1)), (3, (2, 2, 2)), ((1, 3, 3), (1, 1, 1))):
        conv = CausalConv3d(3, 4, kernel, stride)
        kt = conv.kernel_size[0]
        mistakes = {
            "it looks at the future: time is padded on both sides; pad kt - 1 zero frames before frame 0 only":
                padded_conv(conv, VIDEO, kt // 2, kt // 2),
            "time is padded after the last frame; the kt - 1 zero frames go before frame 0 (the past side)":
                padded_conv(conv, VIDEO, 0, kt - 1),
        }
        with torch.no_grad():
            expect(f"causal_conv3d (kernel {conv.kernel_size}, stride {stride})",
                   exercises.causal_conv3d(VIDEO, conv.weight, conv.bias, stride), conv(VIDEO), atol=1e-4,
                   mistakes=mistakes, hint="pad height and width by kh // 2 and kw // 2 on both sides, time by kt - 1 "
                   "before frame 0")


def test_causal_conv3d_is_causal(exercises):
    conv = CausalConv3d(3, 4, 3)
    for frame in range(1, VIDEO.shape[2]):
        changed = VIDEO.clone()
        changed[:, :, frame:] = torch.randn_like(changed[:, :, frame:])
        with torch.no_grad():
            before = exercises.causal_conv3d(VIDEO, conv.weight, conv.bias, (1, 1, 1))
            after = exercises.causal_conv3d(changed, conv.weight, conv.bias, (1, 1, 1))
        assert torch.equal(before[:, :, :frame], after[:, :, :frame]), (
            f"causal_conv3d is not causal: changing frames {frame}.. changed the output before frame {frame}")


def test_space_to_channels(exercises):
    for factor in ((2, 2, 2), (1, 2, 2), (2, 1, 2)):
        x = torch.randn(2, 3, 1 + 2 * factor[0], 4, 4)
        st = factor[0]
        repeated = torch.cat([x[:, :, :1].expand(-1, -1, st - 1, -1, -1), x], dim=2)
        ends = torch.cat([x, x[:, :, -1:].expand(-1, -1, st - 1, -1, -1)], dim=2)
        layout = "b c (t st) (h sh) (w sw) -> b ({}) t h w"
        mistakes = {
            "wrong channel order: expected (c, st, sh, sw), got (st, sh, sw, c)":
                rearrange(repeated, layout.format("st sh sw c"), st=st, sh=factor[1], sw=factor[2]),
            "the copies of frame 0 must go before it (the past side), not after the last frame":
                rearrange(ends, layout.format("c st sh sw"), st=st, sh=factor[1], sw=factor[2]),
        }
        expect(f"space_to_channels(x {tuple(x.shape)}, factor {factor})", exercises.space_to_channels(x, factor),
               space_to_channels(x, factor), atol=0, mistakes=mistakes,
               hint="repeat frame 0 st - 1 times before the clip, so T = 1 + k*st frames make 1 + k output frames")


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(**SMALL_VAE)


def test_sample_posterior_matches_the_objective(exercises):
    """Decoding your sample gives VAEReconstruction's reconstruction for the same noise."""
    vae, objective = small_vae(), VAEReconstruction()
    with torch.no_grad():
        out = objective.losses(vae, VIDEO, sample=True, generator=torch.Generator().manual_seed(1))
        mean, logvar = vae.posterior(VIDEO)
        noise = draw(torch.randn, torch.Generator().manual_seed(1), *mean.shape)
        z = exercises.sample_posterior(mean, logvar, noise)
        expect("sample_posterior", z, mean + (0.5 * logvar).exp() * noise, atol=1e-5, mistakes={
            "the noise is scaled by the variance exp(logvar); scale it by the standard deviation exp(logvar / 2)":
                mean + logvar.exp() * noise,
            "the noise is scaled by logvar itself; the standard deviation is exp(logvar / 2)": mean + logvar * noise})
        expect("decoding your sample vs VAEReconstruction's reconstruction", vae.decode_raw(z),
               out["reconstruction"], atol=1e-4)
    mean, logvar = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    exercises.sample_posterior(mean, logvar, torch.ones(3)).sum().backward()
    assert logvar.grad is not None and bool(logvar.grad.abs().sum() > 0), (
        "sample_posterior: no gradient reaches logvar; compute it from mean and logvar with torch operations "
        "(no .detach(), no torch.no_grad()), so the encoder learns its variance")


def test_kl_divergence_matches_the_objective(exercises):
    vae = small_vae()
    with torch.no_grad():
        mean, logvar = vae.posterior(VIDEO)
        mean, logvar = mean + torch.randn_like(mean), logvar + 1.0  # away from the initial narrow posterior
        values = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)
        mistakes = {"it sums over the values; VAEReconstruction averages them (.mean())": values.sum(),
                    "the factor 0.5 is missing": 2 * values.mean(),
                    "logvar is used as the standard deviation": 0.5 * (mean.pow(2) + logvar.pow(2) - 1 - logvar).mean()}
        expect("kl_divergence", exercises.kl_divergence(mean, logvar), values.mean(), atol=1e-5, mistakes=mistakes)
        logged = VAEReconstruction().losses(vae, VIDEO, sample=False)["kl"]
        expect("kl_divergence of the VAE's posterior vs the kl VAEReconstruction logs",
               exercises.kl_divergence(*vae.posterior(VIDEO)), logged, atol=1e-6)


def test_in_the_framework(exercises):
    """A real VAE on your functions encodes like the first-party one, passes the framework's causality rule
    (latent frame 0 depends on pixel frame 0 only) and trains one step in a WorldModel."""
    reference, vae = small_vae(), adapters.course_vae(exercises, **SMALL_VAE)
    vae.load_state_dict(reference.state_dict())
    video = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        expect("your VAE's encode vs the first-party VAE's", vae.encode(video), reference.encode(video), atol=1e-4)
        check_causal(vae)
    world = WorldModel(vae, VAEReconstruction(crop=16))
    losses = train(world, SyntheticWorld(frames=5, size=(32, 32), batch_size=2, train_size=8), steps=1)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all(), f"one training step gave losses {losses}"
