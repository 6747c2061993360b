"""SyntheticWorld: procedurally rendered clips of moving objects, the embedded default data.

Objects (shape, colour, size) move with a velocity, bounce off the walls, optionally fall under gravity
and slow down under friction, collide elastically with each other and occlude each other. Every clip
is a pure function of (seed, split, index), carries captions with paraphrases and ground-truth labels for
probes, and can be rendered with an *impossible* event (teleport, vanish, pass-through, colour flip) with
the same initial conditions as its possible twin.

Labels describe object 0, the *subject* the caption names first, and the scene. The subject is visibly
singled out, so a label never depends on knowing the simulator's object order: it is the largest object
(every other one has at most `SUBJECT_MARGIN` of its radius) and it is drawn on top of the others.
appearance: shape, colour, size; motion: direction (shown first-frame motion), speed, reversed (clip
played backwards); physics: bounced (subject hit a wall), collided (any two objects collided), count
(objects - 1), gravity; plus violation (0 = none, see VIOLATIONS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from ..errors import ComponentError, require_positive, require_size2
from .sampler import BucketBatchSampler, ResumableDataLoader, SplitLoaders, parse_buckets

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.85, 0.25),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "magenta": (0.95, 0.2, 0.9),
    "cyan": (0.1, 0.9, 0.95),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
DIRECTIONS = ("right", "left", "up", "down")
SPEEDS = ("slow", "fast")
VIOLATIONS = ("none", "teleport", "vanish", "pass_through", "colour_flip")

#: task name -> class names, for probes and the comparison
TASKS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOUR_NAMES,
    "size": SIZES,
    "direction": DIRECTIONS,
    "speed": SPEEDS,
    "reversed": ("forward", "reversed"),
    "bounced": ("no", "yes"),
    "collided": ("no", "yes"),
    "count": ("one", "two", "three"),
    "gravity": ("no", "yes"),
    "violation": VIOLATIONS,
}

_RADIUS = {"small": (0.07, 0.09), "large": (0.12, 0.15)}  # fraction of the shorter side
_SPEED = {"slow": (0.012, 0.022), "fast": (0.035, 0.05)}  # fraction of the shorter side per frame
_DIRECTION_ANGLE = {"right": 0.0, "left": math.pi, "up": -math.pi / 2, "down": math.pi / 2}  # image y points down
_GRAVITY = 0.004  # per frame^2
SUBJECT_MARGIN = 0.8  # other objects' radii are at most this fraction of the subject's
SPLITS = {"train": 0, "val": 1, "test": 2, "predict": 3}
_DIRECTION_WORDS = {
    "right": ("to the right", "rightwards", "towards the right edge"),
    "left": ("to the left", "leftwards", "towards the left edge"),
    "up": ("upwards", "up", "towards the top"),
    "down": ("downwards", "down", "towards the bottom"),
}
_SPEED_WORDS = {"slow": ("slowly", "gently", "at a slow pace"), "fast": ("quickly", "rapidly", "at high speed")}


@dataclass
class Scene:
    """Initial conditions of a clip. Positions/velocities are in units of the shorter side."""

    shapes: list[str]
    colours: list[str]
    sizes: list[str]
    radii: np.ndarray  # (n,)
    position: np.ndarray  # (n, 2) x, y
    velocity: np.ndarray  # (n, 2)
    speed: str
    gravity: bool
    reversed: bool
    background: np.ndarray  # (3,) top colour of a vertical gradient
    friction: float = 0.0  # fraction of its velocity every object loses each frame


def make_scene(rng: np.random.Generator, aspect: float, max_objects: int, gravity_prob: float,
               reverse_prob: float, collision_course: bool = False, object_scale: float = 1.0,
               friction: float = 0.0) -> Scene:
    """Sample initial conditions. `aspect` = W/H; the world is [0, aspect] x [0, 1] if W >= H.
    `object_scale` multiplies every radius (1 = the default sizes); `friction` is kept for `simulate`."""
    extent = np.array([max(aspect, 1.0), max(1.0 / aspect, 1.0)])  # (x, y) size in shorter-side units
    count = 2 if collision_course else int(rng.integers(1, max_objects + 1))
    shapes = [SHAPES[i] for i in rng.integers(0, len(SHAPES), count)]
    colours = list(rng.choice(COLOUR_NAMES, size=count, replace=False))
    sizes = [SIZES[i] for i in rng.integers(0, len(SIZES), count)]
    radii = np.array([rng.uniform(*_RADIUS[s]) for s in sizes]) * object_scale
    radii[1:] = np.minimum(radii[1:], SUBJECT_MARGIN * radii[0])  # the subject is the largest object
    sizes[1:] = ["large" if r >= _RADIUS["large"][0] * object_scale else "small" for r in radii[1:]]
    speed = SPEEDS[int(rng.integers(0, 2))]
    direction = DIRECTIONS[int(rng.integers(0, 4))]
    angles = rng.uniform(-math.pi, math.pi, count)
    angles[0] = _DIRECTION_ANGLE[direction] + rng.uniform(-0.35, 0.35)
    speeds = rng.uniform(*_SPEED[speed], count)
    velocity = np.stack([np.cos(angles), np.sin(angles)], axis=1) * speeds[:, None]
    position = rng.uniform(radii[:, None], extent - radii[:, None], (count, 2))
    if collision_course:  # head-on along the subject's direction, meeting mid-clip
        centre = extent / 2
        unit = velocity[0] / np.linalg.norm(velocity[0])
        gap = 0.3 + radii.sum()
        position = np.stack([centre - unit * gap / 2, centre + unit * gap / 2])
        velocity = np.stack([velocity[0], -velocity[0]])
    return Scene(
        shapes=shapes, colours=colours, sizes=sizes, radii=radii, position=position, velocity=velocity,
        speed=speed, gravity=bool(rng.random() < gravity_prob) and not collision_course,
        reversed=bool(rng.random() < reverse_prob), background=rng.uniform(0.0, 0.25, 3), friction=friction,
    )


def simulate(scene: Scene, frames: int, aspect: float, violation: str = "none", event_frame: int = 0,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Integrate the scene. Returns positions (T, n, 2), visibility (T, n) and physics events."""
    extent = np.array([max(aspect, 1.0), max(1.0 / aspect, 1.0)])
    pos, vel, radii = scene.position.copy(), scene.velocity.copy(), scene.radii
    positions, visible = np.zeros((frames, len(radii), 2)), np.ones((frames, len(radii)), dtype=bool)
    bounced = collided = False
    for frame in range(frames):
        if violation == "teleport" and frame == event_frame:
            pos[0] = extent - pos[0]  # jump to the mirrored position: far away, still in view
        if violation == "vanish" and frame >= event_frame:
            visible[frame, 0] = False
        positions[frame] = pos
        if scene.gravity:
            vel[:, 1] += _GRAVITY
        vel = vel * (1.0 - scene.friction)  # friction: the one time-irreversible force (played backwards, things speed up)
        pos = pos + vel
        low, high = pos < radii[:, None], pos > extent - radii[:, None]
        bounced |= bool((low | high)[0].any())
        vel = np.where(low | high, -vel, vel)
        pos = np.where(low, 2 * radii[:, None] - pos, np.where(high, 2 * (extent - radii[:, None]) - pos, pos))
        for i in range(len(radii)):
            for j in range(i + 1, len(radii)):
                delta = pos[j] - pos[i]
                distance = np.linalg.norm(delta)
                approaching = np.dot(vel[j] - vel[i], delta) < 0
                if distance < radii[i] + radii[j] and approaching:
                    collided = True
                    if violation != "pass_through":  # equal masses: swap the normal components
                        normal = delta / max(distance, 1e-9)
                        exchange = np.dot(vel[i] - vel[j], normal) * normal
                        vel[i], vel[j] = vel[i] - exchange, vel[j] + exchange
    return positions, visible, {"bounced": bounced, "collided": collided}


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (in shorter-side units) from the shape's edge; negative inside."""
    if shape == "circle":
        return np.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - 1.2 * r) / math.sqrt(2)
    # triangle pointing up (y grows downwards): three half-planes at inradius R/2, R = 1.3 r
    return np.maximum(dy, np.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy)) - 0.65 * r


def draw(scene: Scene, positions: np.ndarray, visible: np.ndarray, colours: np.ndarray,
         height: int, width: int) -> np.ndarray:
    """Render (T, H, W, 3) float32 in [0, 1] with anti-aliased edges; the subject (object 0) on top."""
    unit = min(height, width)
    ys = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None] / unit
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :] / unit
    gradient = 1.0 - 0.5 * np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(scene.background.astype(np.float32) * gradient, (height, width, 3))
    canvas = np.repeat(canvas[None], len(positions), axis=0)  # (T, H, W, 3)
    for i in [*range(1, len(scene.shapes)), 0]:  # the subject last, so nothing hides it
        shape = scene.shapes[i]
        dx = xs - positions[:, i, 0, None, None].astype(np.float32)
        dy = ys - positions[:, i, 1, None, None].astype(np.float32)
        alpha = np.clip(0.5 - _signed_distance(shape, dx, dy, scene.radii[i]) * unit, 0.0, 1.0)
        alpha *= visible[:, i, None, None]
        canvas += alpha[..., None] * (colours[:, i, None, None, :] - canvas)
    return canvas


def captions(scene: Scene, direction: str, events: dict) -> list[str]:
    """Descriptive captions, the first the canonical one, the others paraphrases."""
    size, colour, shape = scene.sizes[0], scene.colours[0], scene.shapes[0]
    others = len(scene.shapes) - 1
    d0, d1, d2 = _DIRECTION_WORDS[direction]
    s0, s1, s2 = _SPEED_WORDS[scene.speed]
    extras = []
    if others:
        extras.append(f"with {others} other object{'s' if others > 1 else ''}")
    if events["bounced"]:
        extras.append("bouncing off the wall")
    if events["collided"]:
        extras.append("colliding with another object")
    if scene.gravity:
        extras.append("under gravity")
    tail = (", " + ", ".join(extras)) if extras else ""
    return [
        f"a {size} {colour} {shape} moves {d0} {s0}{tail}",
        f"a {colour} {shape}, {size}, travelling {d1} {s1}{tail}",
        f"{s2}, a {size} {shape} coloured {colour} heads {d2}{tail}",
    ]


def _direction_of(displacement: np.ndarray) -> str:
    dx, dy = displacement
    if abs(dx) >= abs(dy):
        return "right" if dx >= 0 else "left"
    return "down" if dy >= 0 else "up"


class SyntheticClips(Dataset):
    """Deterministic clips for one split. Items may be an index or (index, (T, H, W)) from a bucket sampler."""

    def __init__(self, length: int, split: str, frames: int, size: tuple[int, int], seed: int = 0,
                 max_objects: int = 3, gravity_prob: float = 0.3, reverse_prob: float = 0.0,
                 impossible_prob: float = 0.0, violations: tuple[str, ...] = VIOLATIONS[1:], object_scale: float = 1.0,
                 friction: float = 0.0):
        if split not in SPLITS:
            raise ComponentError(f"SyntheticWorld: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.length, self.split, self.frames, self.size, self.seed = length, split, frames, tuple(size), seed
        self.max_objects, self.gravity_prob, self.reverse_prob = max_objects, gravity_prob, reverse_prob
        self.impossible_prob, self.object_scale, self.friction = impossible_prob, object_scale, friction
        unknown = set(violations) - set(VIOLATIONS[1:])
        if unknown:
            raise ComponentError(f"SyntheticWorld: unknown violations {sorted(unknown)}; valid: {', '.join(VIOLATIONS[1:])}")
        self.violations = tuple(violations)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        index, (frames, height, width) = key if isinstance(key, tuple) else (key, (self.frames, *self.size))
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        violation = "none"
        if self.impossible_prob and rng.random() < self.impossible_prob:
            violation = self.violations[int(rng.integers(0, len(self.violations)))]
        return render(rng, frames, height, width, violation, self.max_objects, self.gravity_prob,
                      self.reverse_prob, object_scale=self.object_scale, friction=self.friction) | {"index": index}


def render(rng: np.random.Generator, frames: int, height: int, width: int, violation: str = "none",
           max_objects: int = 3, gravity_prob: float = 0.3, reverse_prob: float = 0.0,
           collision_course: bool | None = None, object_scale: float = 1.0, friction: float = 0.0) -> dict:
    """Render one clip: {"video": (3, T, H, W) in [-1, 1], "caption", "captions", "labels"}.

    Everything random is drawn from `rng` before the violation is applied, so the same rng state with
    violation="none" renders the possible twin of an impossible clip. Pass-through clips use a head-on
    collision-course scene (`collision_course` defaults to violation == "pass_through"); give
    collision_course=True to render their possible twin.
    """
    aspect = width / height
    if collision_course is None:
        collision_course = violation == "pass_through"
    scene = make_scene(rng, aspect, max_objects, gravity_prob, reverse_prob, collision_course, object_scale, friction)
    event_frame = int(rng.integers(frames // 4, max(frames // 4 + 1, 3 * frames // 4)))
    caption_pick, flip_pick = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    positions, visible, events = simulate(scene, frames, aspect, violation, event_frame)
    colours = np.repeat(np.array([COLOURS[c] for c in scene.colours], dtype=np.float32)[None], frames, axis=0)
    if violation == "colour_flip":
        replacement = [c for c in COLOUR_NAMES if c not in scene.colours][flip_pick]
        colours[event_frame:, 0] = COLOURS[replacement]
    video = draw(scene, positions, visible, colours, height, width)
    if scene.reversed:
        video, positions = video[::-1], positions[::-1]
    shown_motion = positions[1, 0] - positions[0, 0] if frames > 1 else scene.velocity[0]
    direction = _direction_of(shown_motion)
    texts = captions(scene, direction, events)
    labels = {
        "shape": SHAPES.index(scene.shapes[0]), "colour": COLOUR_NAMES.index(scene.colours[0]),
        "size": SIZES.index(scene.sizes[0]), "direction": DIRECTIONS.index(direction),
        "speed": SPEEDS.index(scene.speed), "reversed": int(scene.reversed), "bounced": int(events["bounced"]),
        "collided": int(events["collided"]), "count": len(scene.shapes) - 1, "gravity": int(scene.gravity),
        "violation": VIOLATIONS.index(violation),
    }
    tensor = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2) * 2 - 1  # (3, T, H, W)
    return {"video": tensor, "caption": texts[caption_pick], "captions": texts, "labels": labels}


def collate(items: list[dict]) -> dict:
    """Stack videos and labels; keep captions as lists."""
    return {
        "video": torch.stack([item["video"] for item in items]),
        "caption": [item["caption"] for item in items],
        "captions": [item["captions"] for item in items],
        "labels": {k: torch.tensor([item["labels"][k] for item in items]) for k in items[0]["labels"]},
        "index": torch.tensor([item["index"] for item in items]),
    }


class SyntheticWorld(SplitLoaders, pl.LightningDataModule):
    """Procedurally rendered clips of moving objects; no files needed.

    Args:
        frames: frames per clip.
        size: (H, W) of each frame.
        buckets: (T, H, W) shapes instead of one `frames` x `size`: every batch draws one (by
            `bucket_weights`) and its clips are rendered natively at that size (wide, tall, square; T = 1 for
            images), so nothing is cropped or stretched.
        bucket_weights: how often each bucket is drawn (default: equally often).
        batch_size: clips per batch.
        train_size: clips in the training split (each split has its own seeds).
        val_size: clips in the validation split.
        test_size: clips in the test split.
        predict_size: clips in the predict split.
        max_objects: up to this many objects per clip (1-3).
        gravity_prob: fraction of clips with gravity.
        reverse_prob: fraction of clips played backwards (for the time-reversal probe).
        impossible_prob: fraction of clips with an impossible event, drawn from `violations`.
        violations: which impossible events to draw.
        object_scale: multiplies every object's radius (1: radii of 7-15% of the shorter side; at most 3).
        friction: fraction of its velocity every object loses each frame (0: none, the default). Elastic
            bounces and gravity are time-reversible; friction is not, so with it a clip played backwards
            (`reverse_prob`) can be told from one played forwards.
        num_workers: DataLoader worker processes (rendering takes about a millisecond per clip).
        seed: everything is a deterministic function of it.
    """

    tasks = TASKS

    def __init__(self, frames: int = 16, size: tuple[int, int] = (64, 64),
                 buckets: list[tuple[int, int, int]] | None = None, bucket_weights: list[float] | None = None,
                 batch_size: int = 8, train_size: int = 4096, val_size: int = 256, test_size: int = 256,
                 predict_size: int = 8, max_objects: int = 3, gravity_prob: float = 0.3, reverse_prob: float = 0.0,
                 impossible_prob: float = 0.0, violations: tuple[str, ...] = VIOLATIONS[1:], object_scale: float = 1.0,
                 friction: float = 0.0, num_workers: int = 0, seed: int = 0):
        super().__init__()
        require_size2("SyntheticWorld", size)
        require_positive("SyntheticWorld", frames=frames, batch_size=batch_size, train_size=train_size)
        if not 1 <= max_objects <= 3:
            raise ComponentError(f"SyntheticWorld.max_objects must be 1, 2 or 3, got {max_objects}")
        if not 0 < object_scale <= 3:
            raise ComponentError(f"SyntheticWorld.object_scale must be in (0, 3] so objects fit the frame, got {object_scale}")
        if not 0 <= friction < 1:
            raise ComponentError(f"SyntheticWorld.friction must be in [0, 1) (the fraction of velocity lost per frame), got {friction}")
        if buckets is None and bucket_weights is not None:
            raise ComponentError("SyntheticWorld.bucket_weights needs buckets: list the (T, H, W) shapes they weigh")
        self.buckets, self.bucket_weights = (parse_buckets(buckets, bucket_weights, "SyntheticWorld") if buckets
                                             else ([(frames, *map(int, size))], None))
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.lengths = {"train": train_size, "val": val_size, "test": test_size, "predict": predict_size}
        first = self.buckets[0]
        self.splits = {
            split: SyntheticClips(n, split, first[0], first[1:], seed, max_objects, gravity_prob, reverse_prob,
                                  impossible_prob, tuple(violations), object_scale, friction)
            for split, n in self.lengths.items()
        }

    def dataloader(self, split: str) -> ResumableDataLoader:
        """Batches of one split: seeded order (shuffled for train), one shape per batch, split between DDP
        ranks, resumable mid-epoch (see `BucketBatchSampler`)."""
        dataset = self.splits[split]
        sampler = BucketBatchSampler(len(dataset), self.batch_size, self.buckets, split == "train",
                                     self.seed + SPLITS[split], weights=self.bucket_weights)
        return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0)
