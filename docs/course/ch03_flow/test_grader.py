"""Chapter 3's grader: `patchworld course check 3`. Each test compares a function with the framework's own
(plugins/flow.py's `Flow`, the guidance of plugins/generation.py's `generate`) and names the mistake it
recognises; the sampler is run through the framework's sampling loop on an analytic velocity field, and the
last test trains and samples a real text-to-video world with your functions (`adapters.CourseFlow`)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from patchworld import WorldModel
from patchworld.course import expect, load_module, train
from patchworld.data import SyntheticWorld
from patchworld_plugins.dit import DiT
from patchworld_plugins.flow import Flow
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.text import TinyTextEncoder

adapters = load_module(Path(__file__).with_name("adapters.py"))

generator = torch.Generator().manual_seed(0)
X0 = torch.randn(3, 2, 2, 4, 4, generator=generator)  # (B, c, t, h, w)
NOISE = torch.randn(3, 2, 2, 4, 4, generator=generator)
T = torch.tensor([0.1, 0.5, 0.9])  # (B,)


def test_noised_matches_flow(exercises):
    line = T.view(-1, 1, 1, 1, 1)
    mistakes = {"x0 and the noise are swapped: at t = 0 x_t is the data x0, at t = 1 pure noise":
                    line * X0 + (1 - line) * NOISE,
                "x_t = x0 + t * noise is variance-exploding noising; rectified flow moves on the straight line "
                "(1 - t) * x0 + t * noise": X0 + line * NOISE}
    expect("noised(x0, noise, t (B,))", exercises.noised(X0, NOISE, T), Flow().noised(X0, NOISE, T), mistakes=mistakes,
           hint="each clip b uses its own t[b]: reshape t (B,) to (B, 1, 1, 1, 1)")


def test_velocity_target_matches_flow(exercises):
    mistakes = {"the sign is flipped: x_t moves from x0 (t = 0) towards the noise (t = 1), so dx_t/dt = noise - x0":
                    X0 - NOISE,
                "that is the noise itself (DDPM's epsilon target); rectified flow predicts the velocity dx_t/dt": NOISE}
    expect("velocity_target", exercises.velocity_target(X0, NOISE), Flow().target(X0, NOISE, T), mistakes=mistakes)


def test_velocity_target_is_the_derivative(exercises):
    """Your target is the time derivative of your noised points."""
    h = 1e-3
    slope = (exercises.noised(X0, NOISE, T + h) - exercises.noised(X0, NOISE, T - h)) / (2 * h)
    expect("velocity_target vs the finite difference d/dt of your noised", exercises.velocity_target(X0, NOISE),
           slope, atol=1e-3)


def test_euler_step_matches_flow(exercises):
    x, velocity = NOISE, X0
    t, t_next = torch.tensor(0.8), torch.tensor(0.6)
    mistakes = {"the step goes the wrong way: from t to t_next the sample moves (t_next - t) * velocity":
                    x + (t - t_next) * velocity,
                "the step ignores the time step size: multiply the velocity by (t_next - t)": x - velocity}
    expect("euler_step", exercises.euler_step(x, velocity, t, t_next), Flow().step(x, velocity, t, t_next),
           mistakes=mistakes)


def test_euler_step_samples_an_analytic_distribution(exercises):
    """Flow's own sampling loop with your step integrates the exact velocity field of Gaussian data
    N(mean, std^2) to samples with that mean and std."""
    mean, std = 2.0, 0.5

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x_t = (1 - t) x0 + t n ~ N((1 - t) mean, (1 - t)^2 std^2 + t^2); v = E[n - x0 | x_t]
        t = float(t)
        variance = (1 - t) ** 2 * std ** 2 + t ** 2
        centred = x - (1 - t) * mean
        return t / variance * centred - (mean + (1 - t) * std ** 2 / variance * centred)

    flow = adapters.CourseFlow(exercises, shift=1.0)
    noise = torch.randn(20000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    samples = flow.sample_loop(velocity, noise, steps=50, progress=False)
    got = (float(samples.mean()), float(samples.std()))
    assert abs(got[0] - mean) < 0.05 and abs(got[1] - std) < 0.05, (
        f"euler_step: 50 steps on the exact velocity field of N({mean}, {std}^2) gave samples of mean {got[0]:.3f} and "
        f"std {got[1]:.3f}; each step must move x by (t_next - t) * velocity")


def test_guided_velocity(exercises):
    conditional, unconditional = X0, NOISE
    mistakes = {"conditional and unconditional are swapped: move from the unconditional prediction towards (and past) "
                "the conditional one": conditional + 4 * (unconditional - conditional),
                "it starts from the conditional prediction; guidance starts from the unconditional one: "
                "unconditional + guidance * (conditional - unconditional)": conditional + 4 * (conditional - unconditional)}
    expect("guided_velocity(guidance=4)", exercises.guided_velocity(conditional, unconditional, 4.0),
           unconditional + 4 * (conditional - unconditional), mistakes=mistakes)
    expect("guided_velocity(guidance=1)", exercises.guided_velocity(conditional, unconditional, 1.0), conditional,
           hint="guidance 1 is the conditional prediction itself")
    expect("guided_velocity(guidance=0)", exercises.guided_velocity(conditional, unconditional, 0.0), unconditional,
           hint="guidance 0 is the unconditional prediction")


def tiny_world(objective) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(Pixels(), objective, DiT(dim=32, depth=1, heads=2, patch_size=(1, 2, 2)),
                      TinyTextEncoder(dim=32, depth=1, heads=2))


def test_in_the_framework(exercises):
    """A real text-to-video world on your functions: the same loss as Flow's for the same batch and weights,
    the same samples as Flow.generate with guidance, and one training step in a WorldModel."""
    reference = tiny_world(Flow(sampler="euler", logit_std=2.0))
    world = tiny_world(adapters.CourseFlow(exercises, logit_std=2.0))
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: give the weights some signal first
        for param in reference.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    world.load_state_dict(reference.state_dict())
    reference.eval(), world.eval()
    data = SyntheticWorld(frames=2, size=(8, 8), batch_size=2, train_size=8, val_size=2)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        expect("the loss of Flow on your noised and velocity_target", world.objective.validation_step(world, batch)["loss"],
               reference.objective.validation_step(reference, batch)["loss"], atol=1e-5)
        captions, seeds = ["a red circle", "a blue square"], [0, 1]
        expected = reference.objective.generate(reference, captions, torch.zeros(2, 3, 2, 8, 8), steps=4, guidance=3.0,
                                                seeds=seeds, progress=False)
        model = adapters.guided_model(world, exercises, captions, guidance=3.0)
        tokens = math.prod(world.tokenizer.latent_grid(2, 8, 8)) // math.prod(world.backbone.patch_size)
        got = world.objective.sample_loop(model, adapters.seeded_noise(world, (2, 8, 8), seeds), 4, tokens, progress=False)
        expect("4 guided sampling steps with your euler_step and guided_velocity vs Flow.generate(guidance=3)",
               got.clamp(-1, 1), expected, atol=1e-4)
    losses = train(world, data, steps=1)
    assert len(losses) == 1 and math.isfinite(losses[0]), f"one training step gave losses {losses}"
