"""Planning toward a goal image with a world model: CEM in representation space, closed loop (MPC).

A `Dynamics` embeds frames and rolls embeddings forward under actions: `LearnedDynamics` is a trained
`ActionConditioned` world model, `ExactDynamics` the toy whose "embedding" is the agent's position read off
the frame and whose prediction is the world's true dynamics (or, with ``use_actions=False``, a predictor that
ignores the actions). `CEM` picks the action sequence whose predicted final embedding is nearest (L1) to the
goal image's; `plan_episode` executes its first `replan_every` actions in the world, looks again and
re-plans. `act_episode` runs a policy that needs no model (random actions, the greedy oracle) on the same
episodes, and `summarise` scores them: success (the agent ends within `tolerance` of the goal) with a 95%
bootstrap interval (`statistics.accuracy_estimate`), final distance and planning time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch

from ..data.actions import Arena
from .statistics import accuracy_estimate


class Dynamics(Protocol):
    """What the planner needs of a world model."""

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, T, H, W) -> embeddings (B, T, ...) (e.g. tokens (B, T, n, D))."""

    def rollout(self, start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, h, ...) after each of actions (B, h, A) from start (B, ...)."""


class LearnedDynamics:
    """A trained action-conditioned world model (a `WorldModel` whose objective is `ActionConditioned`)."""

    def __init__(self, world):
        self.world = world.eval()

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        return self.world.objective.embed(self.world, video)

    @torch.no_grad()
    def rollout(self, start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.world.objective.rollout(start, actions)


class ExactDynamics:
    """The toy model: the embedding is the agent's position (`Arena.locate`), the prediction the true dynamics;
    with ``use_actions=False`` it predicts that nothing moves whatever the actions (an action-blind model)."""

    def __init__(self, arena: Arena, use_actions: bool = True):
        self.arena, self.use_actions = arena, use_actions

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        return self.arena.locate(video)

    def rollout(self, start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if not self.use_actions:
            return start[:, None].expand(-1, actions.shape[1], -1)
        return self.arena.rollout(start, actions)[:, 1:]


@dataclass
class CEM:
    """The cross-entropy method over action sequences of `horizon` steps (actions in the unit disc).

    Each of `iterations` rounds draws `samples` sequences from a Gaussian (mean 0 and std 1 at first, or the
    previous plan shifted), keeps the `elites` of lowest cost and refits the Gaussian to them (std at least
    `min_std`); the plan is the final mean."""

    horizon: int = 6
    samples: int = 128
    elites: int = 16
    iterations: int = 3
    min_std: float = 0.05

    def plan(self, cost: Callable[[torch.Tensor], torch.Tensor], action_dim: int, generator: torch.Generator,
             warm: torch.Tensor | None = None) -> torch.Tensor:
        """The planned actions (horizon, action_dim); `cost` maps candidates (S, horizon, A) to (S,)."""
        mean = torch.zeros(self.horizon, action_dim) if warm is None else warm
        std = torch.ones(self.horizon, action_dim)
        for _ in range(self.iterations):
            noise = torch.randn(self.samples, self.horizon, action_dim, generator=generator)
            candidates = unit_disc(mean + std * noise)  # (S, h, A)
            elite = candidates[cost(candidates).topk(self.elites, largest=False).indices]  # (K, h, A)
            mean, std = elite.mean(0), elite.std(0).clamp(min=self.min_std)
        return unit_disc(mean)


def unit_disc(actions: torch.Tensor) -> torch.Tensor:
    """Actions (..., A) scaled back onto the unit ball where they are longer than 1."""
    return actions / actions.norm(dim=-1, keepdim=True).clamp(min=1.0)


@dataclass
class Episode:
    """One episode: the positions visited (steps + 1, 2), the goal (2,), each plan's intended path in the world
    (the true positions its actions lead to from where it was made, (horizon + 1, 2)) and the seconds spent
    choosing actions."""

    positions: torch.Tensor
    goal: torch.Tensor
    plans: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0

    def distance(self) -> float:
        return float((self.positions[-1] - self.goal).norm())


def plan_episode(dynamics: Dynamics, arena: Arena, start: torch.Tensor, goal_image: torch.Tensor, goal: torch.Tensor,
                 cem: CEM, steps: int, replan_every: int, generator: torch.Generator) -> Episode:
    """Closed-loop planning (MPC) from `start` (2,) towards `goal_image` (3, 1, H, W) for `steps` actions:
    plan with `cem` from the current frame (its horizon cut to the actions left, so the last plans end where the
    episode does), execute the first `replan_every` actions, repeat. `goal` (2,) is
    only recorded (for scoring), never shown to the planner."""
    episode = Episode(positions=start[None], goal=goal)
    target = dynamics.embed(goal_image[None])[0, -1]  # (...) one frame's embedding
    warm = None
    while len(episode.positions) <= steps:
        began = time.perf_counter()
        position, remaining = episode.positions[-1], steps + 1 - len(episode.positions)
        planner = replace(cem, horizon=min(cem.horizon, remaining))  # no plan ends after the episode does
        current = dynamics.embed(arena.render(position[None])[None])[:, -1]  # (1, ...)

        def cost(candidates: torch.Tensor) -> torch.Tensor:  # (S, h, A) -> (S,)
            final = dynamics.rollout(current.expand(len(candidates), *current.shape[1:]), candidates)[:, -1]  # (S, ...)
            return (final - target).abs().flatten(1).mean(-1)  # L1 to the goal's embedding

        plan = planner.plan(cost, 2, generator, None if warm is None else warm[: planner.horizon])  # (h, 2)
        episode.seconds += time.perf_counter() - began
        episode.plans.append(arena.rollout(position, plan))
        episode.positions = torch.cat([episode.positions, arena.rollout(position, plan[:replan_every])[1:]])
        warm = torch.cat([plan[replan_every:], torch.zeros(replan_every, 2)])  # the rest of the plan, then still
    return episode


def act_episode(policy: Callable[[torch.Tensor], torch.Tensor], arena: Arena, start: torch.Tensor,
                goal: torch.Tensor, steps: int) -> Episode:
    """`steps` actions of a model-free `policy` (position (2,) -> action (2,)) from `start`."""
    episode = Episode(positions=start[None], goal=goal)
    for _ in range(steps):
        began = time.perf_counter()
        action = policy(episode.positions[-1])
        episode.seconds += time.perf_counter() - began
        episode.positions = torch.cat([episode.positions, arena.move(episode.positions[-1], action)[None]])
    return episode


def random_policy(arena: Arena, seed: int, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Uniform random actions in the unit disc, seeded by (seed, episode index)."""
    rng = np.random.default_rng([seed, index, 1])
    return lambda position: arena.random_actions(rng, 1)[0]


def oracle_policy(arena: Arena, goal: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The greedy oracle: knows the true state and pushes straight at the goal."""
    return lambda position: arena.greedy(position, goal)


def summarise(episodes: list[Episode], tolerance: float) -> dict:
    """Success rate (final distance < `tolerance`) with a 95% bootstrap interval over episodes, mean final
    distance, and the mean seconds per episode spent choosing actions."""
    distances = np.array([episode.distance() for episode in episodes])
    success = accuracy_estimate(distances < tolerance)
    return {"episodes": len(episodes), "success": success.as_dict(), "final_distance": float(distances.mean()),
            "seconds_per_episode": float(np.mean([episode.seconds for episode in episodes]))}
