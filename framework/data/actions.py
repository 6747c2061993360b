"""ActionWorld: clips of an agent (a disc) pushed by one 2-D action per frame, the world to plan in.

The arena is the unit square (in units of the frame's shorter side, as in SyntheticWorld); the agent is a
disc of radius `radius` drawn by SyntheticWorld's renderer (`synthetic.draw`) on a fixed background. An action
is a push a = (ax, ay) in the unit disc (longer ones are scaled back onto it): the agent moves by
`step_size` * a, and the walls stop it (its centre stays at least a radius from every edge). Frame t shows the
agent at state[t]; action[t] moves it from state[t] to state[t + 1], so a clip of T frames has T - 1 actions.

Every clip is a pure function of (seed, split, index). Training clips take random actions (uniform in the
disc); a `directed_prob` share instead heads for a random goal with the greedy policy plus noise. `Arena`
holds the dynamics, the renderer, the episodes planning is scored on and the greedy oracle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from ..errors import ComponentError, DataError
from .sampler import BucketBatchSampler, ResumableDataLoader, SplitLoaders
from .synthetic import COLOURS, SPLITS, Scene, draw

#: the background (RGB in [0, 1]) of every frame, darkened towards the bottom by `synthetic.draw`
BACKGROUND = np.array([0.15, 0.15, 0.2])
#: the seed stream of planning episodes (after SyntheticWorld's train/val/test/predict)
EPISODES = len(SPLITS)


@dataclass(frozen=True)
class Arena:
    """The agent's world: dynamics, renderer, episodes and the greedy oracle.

    Args:
        height / width: frame size in pixels (square: the arena is the unit square).
        radius: the agent's radius (shorter-side units).
        step_size: how far the strongest action (|a| = 1) moves the agent in one frame.
        colour: the agent's colour (one of SyntheticWorld's).
    """

    height: int = 32
    width: int = 32
    radius: float = 0.12
    step_size: float = 0.1
    colour: str = "red"

    def __post_init__(self):
        if self.height != self.width:
            raise ComponentError(f"ActionWorld.size must be square (the arena is the unit square), got "
                                 f"{self.height}x{self.width}")
        if self.colour not in COLOURS:
            raise ComponentError(f"ActionWorld.colour {self.colour!r} unknown; valid: {', '.join(COLOURS)}")
        if not 0 < self.radius < 0.5 or not 0 < self.step_size < 1:
            raise ComponentError(f"ActionWorld needs 0 < radius < 0.5 and 0 < step_size < 1, got radius "
                                 f"{self.radius}, step_size {self.step_size}")

    # ---- dynamics (torch, any leading batch shape) -------------------------------------------------
    def move(self, position: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next position (..., 2) after pushing the agent at `position` (..., 2) with `action` (..., 2)."""
        action = action / action.norm(dim=-1, keepdim=True).clamp(min=1.0)  # onto the unit disc
        return (position + self.step_size * action).clamp(self.radius, 1 - self.radius)

    def rollout(self, start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Positions (..., h + 1, 2) visited from `start` (..., 2) under `actions` (..., h, 2), start included."""
        positions = [start]
        for step in range(actions.shape[-2]):
            positions.append(self.move(positions[-1], actions[..., step, :]))
        return torch.stack(positions, dim=-2)

    # ---- rendering ------------------------------------------------------------------------------
    def render(self, positions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frames (3, T, H, W) in [-1, 1] showing the agent at `positions` (T, 2)."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 1, 2)  # (T, 1 object, 2)
        scene = Scene(shapes=["circle"], colours=[self.colour], sizes=["large"], radii=np.array([self.radius]),
                      position=positions[0], velocity=np.zeros((1, 2)), speed="slow", gravity=False,
                      reversed=False, background=BACKGROUND)
        colours = np.broadcast_to(np.array(COLOURS[self.colour], dtype=np.float32), (len(positions), 1, 3))
        frames = draw(scene, positions, np.ones((len(positions), 1), dtype=bool), colours, self.height, self.width)
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2) * 2 - 1  # (3, T, H, W)

    def locate(self, video: torch.Tensor) -> torch.Tensor:
        """Where the agent is in frames (B, 3, T, H, W) in [-1, 1] drawn as `render` draws them: (B, T, 2), the
        centroid of its coverage (each pixel's share of agent colour against the background behind it)."""
        pixels = (video.float() + 1) / 2  # (B, 3, T, H, W) in [0, 1]
        shade = 1.0 - 0.5 * torch.linspace(0, 1, self.height)  # (H,) the background's vertical gradient
        ground = torch.tensor(BACKGROUND, dtype=torch.float32)[:, None] * shade  # (3, H)
        towards = torch.tensor(COLOURS[self.colour])[:, None] - ground  # (3, H) background -> agent colour
        coverage = torch.einsum("bcthw,ch->bthw", pixels - ground[:, None, :, None], towards)
        coverage = (coverage / towards.pow(2).sum(0)[:, None]).clamp(0, 1)  # (B, T, H, W)
        centres = (torch.arange(self.height, dtype=torch.float32) + 0.5) / self.height  # (H,) = (W,): square
        mass = coverage.sum(dim=(-2, -1)).clamp(min=1e-6)  # (B, T)
        x = (coverage.sum(dim=-2) * centres).sum(-1) / mass
        y = (coverage.sum(dim=-1) * centres).sum(-1) / mass
        return torch.stack([x, y], dim=-1)  # (B, T, 2)

    # ---- episodes and policies ---------------------------------------------------------------------
    def random_position(self, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(self.radius, 1 - self.radius, 2)).float()

    def episode(self, seed: int, index: int, min_distance: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and goal positions (2,) of planning episode `index`: uniform in the arena, at least
        `min_distance` apart, a pure function of (seed, index)."""
        rng = np.random.default_rng([seed, EPISODES, index])
        start = self.random_position(rng)
        while True:
            goal = self.random_position(rng)
            if (goal - start).norm() >= min_distance:
                return start, goal

    def greedy(self, position: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The oracle's action (..., 2): straight at the goal, as far as one action goes (it knows the state)."""
        return (goal - position) / self.step_size  # `move` scales it onto the unit disc

    def random_actions(self, rng: np.random.Generator, count: int) -> torch.Tensor:
        """`count` actions (count, 2) uniform in the unit disc."""
        angle, length = rng.uniform(-np.pi, np.pi, count), np.sqrt(rng.uniform(0, 1, count))
        return torch.from_numpy(np.stack([np.cos(angle), np.sin(angle)], axis=1) * length[:, None]).float()


class ActionClips(Dataset):
    """Deterministic clips of one split: {"video" (3, T, H, W), "actions" (T - 1, 2), "state" (T, 2), "index"}."""

    def __init__(self, arena: Arena, length: int, split: str, frames: int, seed: int = 0, directed_prob: float = 0.0):
        if split not in SPLITS:
            raise ComponentError(f"ActionWorld: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.arena, self.length, self.split, self.frames = arena, length, split, frames
        self.seed, self.directed_prob = seed, directed_prob

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else key  # a bucket sampler's (index, shape): one shape here
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        start = self.arena.random_position(rng)
        actions = self.arena.random_actions(rng, self.frames - 1)  # (T - 1, 2)
        if rng.random() < self.directed_prob:  # heads for a random goal, with noise
            goal, noise = self.arena.random_position(rng), 0.5 * actions
            position, directed = start, []
            for step in range(self.frames - 1):
                directed.append(self.arena.greedy(position, goal) + noise[step])
                position = self.arena.move(position, directed[-1])
            actions = torch.stack(directed)
        actions = actions / actions.norm(dim=-1, keepdim=True).clamp(min=1.0)  # the pushes as applied
        state = self.arena.rollout(start, actions)  # (T, 2)
        return {"video": self.arena.render(state), "actions": actions, "state": state, "index": index}


def collate(items: list[dict]) -> dict:
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


class ActionWorld(SplitLoaders, pl.LightningDataModule):
    """An agent (a disc) pushed by a 2-D action per frame, for action-conditioned world models and planning.

    Batches: "video" (B, 3, T, H, W) in [-1, 1], "actions" (B, T - 1, 2) (each in the unit disc; action t moves
    the agent from frame t to frame t + 1), "state" (B, T, 2) the agent's true positions (shorter-side units,
    x right, y down) and "index". One clip size (no buckets); batches resume exactly mid-epoch.

    Args:
        frames: frames per clip.
        size: (H, W) of each frame (square).
        batch_size: clips per batch.
        train_size: clips in the training split (each split has its own seeds).
        val_size: clips in the validation split.
        test_size: clips in the test split.
        predict_size: clips in the predict split.
        radius: the agent's radius (fraction of the frame).
        step_size: how far the strongest push moves it per frame (fraction of the frame).
        colour: the agent's colour (SyntheticWorld's names).
        directed_prob: share of clips whose actions head for a random goal (greedy plus noise) instead of
            being random.
        num_workers: DataLoader worker processes.
        seed: everything is a deterministic function of it.
    """

    def __init__(self, frames: int = 8, size: tuple[int, int] = (32, 32), batch_size: int = 16,
                 train_size: int = 8192, val_size: int = 64, test_size: int = 64, predict_size: int = 8,
                 radius: float = 0.12, step_size: float = 0.1, colour: str = "red", directed_prob: float = 0.0,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        if frames < 2:
            raise ComponentError(f"ActionWorld.frames must be at least 2 (an action moves frame t to t + 1), got {frames}")
        if not 0 <= directed_prob <= 1:
            raise ComponentError(f"ActionWorld.directed_prob must be in [0, 1], got {directed_prob}")
        self.arena = Arena(int(size[0]), int(size[1]), radius, step_size, colour)
        self.frames, self.batch_size, self.num_workers, self.seed = frames, batch_size, num_workers, seed
        lengths = {"train": train_size, "val": val_size, "test": test_size, "predict": predict_size}
        self.splits = {split: ActionClips(self.arena, n, split, frames, seed, directed_prob) for split, n in lengths.items()}

    def dataloader(self, split: str) -> ResumableDataLoader:
        """Batches of one split: seeded order (shuffled for train), split between DDP ranks, resumable."""
        sampler = BucketBatchSampler(len(self.splits[split]), self.batch_size,
                                     [(self.frames, self.arena.height, self.arena.width)], split == "train",
                                     self.seed + SPLITS[split])
        return ResumableDataLoader(self.splits[split], batch_sampler=sampler, collate_fn=collate,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)


def check_image(image: torch.Tensor, arena: Arena, what: str) -> torch.Tensor:
    """`image` (3, H, W) or (3, 1, H, W) as a frame (3, 1, H, W) of this arena's size, or a one-line DataError."""
    if image.dim() == 3:
        image = image[:, None]
    if image.dim() != 4 or image.shape[0] != 3 or tuple(image.shape[2:]) != (arena.height, arena.width):
        raise DataError(f"{what} has shape {tuple(image.shape)}; the world's frames are RGB "
                        f"{arena.height}x{arena.width}")
    return image
