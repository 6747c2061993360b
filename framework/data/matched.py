"""Matched sets of possible and impossible clips, IntPhys-style, for scoring a world model's surprise.

A matched set holds two *possible* clips P0 and P1 of the same scene that differ in one property (the
subject is there or not, is displaced, has another shape or colour, ...), both of T frames with the same
event frame e, and two *impossible* clips spliced from them along time::

    I01 = P0[:e] ++ P1[e:]        I10 = P1[:e] ++ P0[e:]

Every frame then appears exactly once among the possible clips and exactly once among the impossible ones,
so low-level frame statistics (brightness, colour histograms, ...) cannot tell the two classes apart, and
each impossible clip shares its prefix up to the event with one possible clip: a model can only tell them
apart by noticing that what follows the event is impossible given what came before it. Order inside a
set: ``[P0, P1, I01, I10]``, ``impossible = [False, False, True, True]``.

Violations (`MATCHED_VIOLATIONS`), each a choice of the two possible clips:

- ``permanence``: an opaque grey bar (about a third of the width, full height, drawn on top) stands in the
  middle; the subject moves horizontally behind it. P0: subject present; P1: absent. At e the subject is
  fully hidden, so I01 = it vanishes behind the occluder, I10 = it appears from behind it.
- ``continuity``: P1 is P0's horizontal motion displaced vertically by 3.5-4.5 radii (both fully in view).
  I01 / I10 jump (teleport) at e.
- ``shape``: P0 and P1 move the same way with the same colour but have two different shapes: the shape
  changes at e.
- ``colour``: same trajectory and shape, two different colours: the colour changes at e.
- ``solidity``: an opaque vertical wall in the middle. P0 starts left of it, bounces elastically off its
  left face and goes back left; P1 is P0's mirror image (right side). e is the first frame after the bounce
  (always in the middle half of the clip). I01 approaches from the left and leaves on the right: it went
  through the wall; I10 the same from the right.
- ``gravity``: P0 falls from near rest in the upper part, accelerating down (with a little horizontal
  drift), fully in view; P1 is P0 played backwards (thrown up, decelerating: possible). e = T // 2: I01
  falls then rises back up unsupported, I10 rises then falls down in mid-air.

Scenes have a flat background colour (the same in all four clips); ``permanence``, ``continuity``,
``shape`` and ``colour`` sets may have one or two smaller distractor objects that move and bounce normally
and are identical in all four clips. The subject is drawn on top of distractors, bars on top of
everything. Everything is drawn from a numpy Generator seeded with (seed, violation index, set index), so a
set is a pure function of its arguments. Videos are float tensors (3, T, H, W) in [-1, 1], like
SyntheticWorld's.

User folders (`read_matched_folder`, written by `write_matched_folder`)::

    root/<violation>/<set>/possible/*.mp4      (or .avi .mov .mkv .webm; at least one clip)
    root/<violation>/<set>/impossible/*.mp4    (as many clips as possible/)
    root/<violation>/<set>/event.txt           (optional: the event frame, one integer)

``<violation>`` is any folder name (``permanence``, ``my_gravity``, ...) and becomes `MatchedSet.violation`;
``<set>`` becomes `MatchedSet.name`. Sets and clips are sorted by name; a set's videos are its possible
clips, then its impossible ones. All clips of a set must have the same number of frames (unless `frames`
keeps the first N of each) and all clips of the folder the same size (unless `size` resizes them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ComponentError, DataError
from .synthetic import COLOUR_NAMES, COLOURS, SHAPES, Scene, _signed_distance, simulate
from .video_io import atomic_path, probe_video, read_clip, write_video

MATCHED_VIOLATIONS = ("permanence", "continuity", "shape", "colour", "solidity", "gravity")
CLIP_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
MIN_FRAMES = 8
MIN_SIDE = 24  # pixels of the shorter side: room for an occluder that hides a visible subject
MAX_OBJECT_SCALE = 1.5

_RADIUS = (0.08, 0.11)  # subject radius, fraction of the shorter side (times object_scale)
# half width and half height of each shape's footprint, in radii (see synthetic._signed_distance)
_EXTENT = {"circle": (1.0, 1.0), "square": (0.85, 0.85), "diamond": (1.2, 1.2), "triangle": (1.13, 1.3)}
_WITH_DISTRACTORS = ("permanence", "continuity", "shape", "colour")


@dataclass
class MatchedSet:
    """One matched set: clips of the same scene, some possible, some impossible.

    Generated sets hold [P0, P1, I01, I10]; `info` then has ``trajectory`` ((K, T, 2) subject centre x, y in
    pixels, pixel i spanning [i, i + 1); NaN where the subject is absent), ``radius`` (subject radius in
    pixels), ``background`` ((3,) in [-1, 1]) and ``bar`` ((left, right) pixel x of the occluder or wall, or
    None). Sets read from a folder have ``paths`` (one per clip) in `info`.
    """

    name: str  # e.g. "permanence-003" or the set folder's name
    violation: str
    videos: torch.Tensor  # (K, 3, T, H, W) in [-1, 1]
    impossible: torch.Tensor  # (K,) bool
    event_frame: int | None  # None when unknown (user folders without event.txt)
    info: dict = field(default_factory=dict)


@dataclass
class _Body:
    """An object over a clip, in shorter-side units (the world is [0, ex] x [0, ey])."""

    shape: str
    colour: np.ndarray  # (3,) in [0, 1]
    radius: float
    positions: np.ndarray  # (T, 2) centre x, y


@dataclass
class _World:
    height: int
    width: int
    frames: int

    @property
    def unit(self) -> int:
        return min(self.height, self.width)

    @property
    def extent(self) -> np.ndarray:  # (2,) x, y size in shorter-side units
        return np.array([self.width, self.height], dtype=np.float64) / self.unit

    @property
    def pixel(self) -> float:  # one pixel in shorter-side units
        return 1.0 / self.unit


@dataclass
class _Pair:
    """What distinguishes P0 from P1: their subjects (None = absent), the event frame, an optional bar."""

    first: _Body | None
    second: _Body | None
    event: int
    bar: tuple[float, float] | None = None  # (left, right) x in shorter-side units, full height


# ----------------------------------------------------------------------------------------------- generation


def render_matched_set(violation: str, index: int, frames: int = 16, size: tuple[int, int] = (32, 32), seed: int = 0,
                       object_scale: float = 1.0) -> MatchedSet:
    """Render the matched set number `index` of one violation: videos (4, 3, T, H, W) = [P0, P1, I01, I10].

    Args:
        violation: one of `MATCHED_VIOLATIONS`.
        index: set number (any integer >= 0); with `seed` it determines the whole set.
        frames: T, at least 8.
        size: (H, W), the shorter side at least 24 pixels; non-square sizes widen the world.
        seed: base seed.
        object_scale: multiplies the subject's radius (8-11% of the shorter side at 1), in (0, 1.5]. The
            radius is at least 1.5 pixels (2.5 for ``shape``, so shapes differ), and capped where a
            construction needs room (the occluder must hide the subject, the offset and the bounce must fit).
    """
    _check_violations([violation])
    frames, (height, width) = _check_geometry(frames, size, object_scale)
    if int(index) < 0 or int(seed) < 0:
        raise ComponentError(f"matched sets: index and seed must be >= 0, got index={index}, seed={seed}")
    world = _World(height, width, frames)
    rng = np.random.default_rng([int(seed), MATCHED_VIOLATIONS.index(violation), int(index)])
    background = rng.uniform(0.0, 0.25, 3)
    bar_colour = np.full(3, rng.uniform(0.45, 0.65))
    pair = _BUILDERS[violation](rng, world, object_scale)
    distractors: list[_Body] = []
    if violation in _WITH_DISTRACTORS:
        distractors = _distractors(rng, world, pair, int(rng.integers(0, 3)))
    e = pair.event
    clips = []
    for subject in (pair.first, pair.second):
        bodies = distractors + ([subject] if subject is not None else [])  # the subject on top
        clips.append(_draw(world, background, bodies, pair.bar, bar_colour))  # (T, H, W, 3)
    # in numpy, then one tensor: many tiny torch ops are slow where CPU threads are contended
    p0, p1 = (c.transpose(3, 0, 1, 2) * np.float32(2) - np.float32(1) for c in clips)  # (3, T, H, W)
    i01, i10 = np.concatenate([p0[:, :e], p1[:, e:]], axis=1), np.concatenate([p1[:, :e], p0[:, e:]], axis=1)
    paths = [_pixels(world, pair.first), _pixels(world, pair.second)]  # (T, 2) each
    trajectory = np.stack([*paths, np.concatenate([paths[0][:e], paths[1][e:]]),
                           np.concatenate([paths[1][:e], paths[0][e:]])])  # (4, T, 2)
    subject = pair.first if pair.first is not None else pair.second
    info = {
        "trajectory": trajectory.astype(np.float32),
        "radius": subject.radius * world.unit,
        "background": tuple(float(c) * 2 - 1 for c in background),
        "bar": None if pair.bar is None else (pair.bar[0] * world.unit, pair.bar[1] * world.unit),
    }
    return MatchedSet(
        name=f"{violation}-{int(index):03d}", violation=violation,
        videos=torch.from_numpy(np.ascontiguousarray(np.stack([p0, p1, i01, i10]))),  # (4, 3, T, H, W)
        impossible=torch.tensor([False, False, True, True]), event_frame=e, info=info,
    )


def matched_sets(violations: Sequence[str] | str = MATCHED_VIOLATIONS, sets_per_violation: int = 16, frames: int = 16,
                 size: tuple[int, int] = (32, 32), seed: int = 0, object_scale: float = 1.0) -> list[MatchedSet]:
    """`sets_per_violation` sets of each violation (violation by violation, index 0, 1, ...); see
    `render_matched_set` for the arguments."""
    violations = (violations,) if isinstance(violations, str) else tuple(violations)
    _check_violations(violations)
    _check_geometry(frames, size, object_scale)
    if int(sets_per_violation) < 0:
        raise ComponentError(f"matched sets: sets_per_violation must be >= 0, got {sets_per_violation}")
    return [render_matched_set(v, k, frames, size, seed, object_scale)
            for v in violations for k in range(int(sets_per_violation))]


def _check_violations(violations: Iterable[str]) -> None:
    unknown = [v for v in violations if v not in MATCHED_VIOLATIONS]
    if unknown:
        raise ComponentError(f"matched sets: unknown violation(s) {unknown}; valid: {', '.join(MATCHED_VIOLATIONS)}")


def _check_geometry(frames: int, size: tuple[int, int], object_scale: float) -> tuple[int, tuple[int, int]]:
    if int(frames) != frames or frames < MIN_FRAMES:
        raise ComponentError(f"matched sets need frames >= {MIN_FRAMES} (an event in the middle half of the clip), "
                             f"got {frames}")
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ComponentError(f"matched sets: size must be (H, W), got {size!r}") from None
    if min(height, width) < MIN_SIDE:
        raise ComponentError(f"matched sets need a shorter side of at least {MIN_SIDE} pixels, "
                             f"got size (H, W)=({height}, {width})")
    if not 0 < object_scale <= MAX_OBJECT_SCALE:
        raise ComponentError(f"matched sets: object_scale must be in (0, {MAX_OBJECT_SCALE:g}] so the constructions "
                             f"fit, got {object_scale}")
    return int(frames), (height, width)


def _subject(rng: np.random.Generator, world: _World, scale: float,
             min_pixels: float = 1.5) -> tuple[str, np.ndarray, float]:
    """(shape, rgb, radius) of a random subject; the radius is at least `min_pixels` pixels."""
    shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
    colour = COLOUR_NAMES[int(rng.integers(0, len(COLOUR_NAMES)))]
    radius = max(float(rng.uniform(*_RADIUS) * scale), min_pixels * world.pixel)
    return shape, np.array(COLOURS[colour]), radius


def _margins(world: _World, shape: str, radius: float) -> np.ndarray:
    """(2,) distance from a border at which the subject, anti-aliased fringe included, is fully in view."""
    return np.array(_EXTENT[shape]) * radius + 1.5 * world.pixel


def _middle_event(rng: np.random.Generator, frames: int) -> int:
    """An event frame in the middle half of the clip: [T // 4, T - T // 4)."""
    return int(rng.integers(frames // 4, frames - frames // 4))


def _linear_path(rng: np.random.Generator, world: _World, margin: np.ndarray, min_travel: float) -> np.ndarray:
    """(T, 2) constant-velocity path between two points of the in-view box, at least `min_travel` apart."""
    low, high = margin, world.extent - margin
    travel = min(min_travel, 0.8 * float(np.linalg.norm(high - low)))
    for _ in range(1000):
        start, end = rng.uniform(low, high), rng.uniform(low, high)
        if np.linalg.norm(end - start) >= travel:
            break
    else:  # practically unreachable: the two opposite corners
        start, end = low, high
    steps = np.linspace(0.0, 1.0, world.frames)[:, None]
    return start + (end - start) * steps


def _permanence(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    ex, ey = world.extent
    shape, colour, radius = _subject(rng, world, scale)
    half = 0.165 * ex  # the occluder is 33% of the width, full height
    # so the occluder hides it fully, anti-aliased fringes included
    radius = min(radius, (half - 1.5 * world.pixel) / _EXTENT[shape][0])
    centre = ex / 2
    frames = world.frames
    e = int(rng.integers(frames // 2 - frames // 8, frames // 2 + frames // 8 + 1))
    # at e the subject is exactly behind the occluder's centre; at the first and the last frame it is fully
    # out from behind it (it may leave the view on its longer side)
    clearance = half + _EXTENT[shape][0] * radius + world.pixel + rng.uniform(0.03, 0.12)
    speed = clearance / min(e, frames - 1 - e) * float(rng.choice([-1.0, 1.0]))
    margin = _margins(world, shape, radius)
    y = rng.uniform(margin[1], ey - margin[1])
    t = np.arange(frames, dtype=np.float64)
    positions = np.stack([centre + speed * (t - e), np.full(frames, y)], axis=1)
    return _Pair(_Body(shape, colour, radius, positions), None, e, (centre - half, centre + half))


def _continuity(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    ex, ey = world.extent
    shape, colour, radius = _subject(rng, world, scale)
    hx, hy = _EXTENT[shape]
    radius = min(radius, (ey - 2 * world.pixel) / (3.5 + 2 * hy))  # room for the offset, both in view
    margin = _margins(world, shape, radius)
    offset = min(rng.uniform(3.5, 4.5) * radius, ey - 2 * margin[1])
    room = ex - 2 * margin[0]
    travel = rng.uniform(0.35, 0.6) * room
    x0 = margin[0] + rng.uniform(0, room - travel)
    xs = np.linspace(x0, x0 + travel, world.frames)
    if rng.random() < 0.5:
        xs = xs[::-1].copy()
    y = margin[1] + rng.uniform(0.0, max(0.0, ey - 2 * margin[1] - offset))
    first, second = np.stack([xs, np.full_like(xs, y)], 1), np.stack([xs, np.full_like(xs, y + offset)], 1)
    if rng.random() < 0.5:
        first, second = second, first
    e = _middle_event(rng, world.frames)
    return _Pair(_Body(shape, colour, radius, first), _Body(shape, colour, radius, second), e)


def _shape(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    a, b = rng.choice(len(SHAPES), size=2, replace=False)
    _, colour, radius = _subject(rng, world, scale, min_pixels=2.5)  # shapes need a few pixels to differ
    margin = np.maximum(_margins(world, SHAPES[a], radius), _margins(world, SHAPES[b], radius))
    path = _linear_path(rng, world, margin, 0.3)
    e = _middle_event(rng, world.frames)
    return _Pair(_Body(SHAPES[a], colour, radius, path), _Body(SHAPES[b], colour, radius, path.copy()), e)


def _colour(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    a, b = rng.choice(len(COLOUR_NAMES), size=2, replace=False)
    shape, _, radius = _subject(rng, world, scale)
    path = _linear_path(rng, world, _margins(world, shape, radius), 0.3)
    e = _middle_event(rng, world.frames)
    first = _Body(shape, np.array(COLOURS[COLOUR_NAMES[a]]), radius, path)
    return _Pair(first, _Body(shape, np.array(COLOURS[COLOUR_NAMES[b]]), radius, path.copy()), e)


def _solidity(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    ex, ey = world.extent
    frames = world.frames
    shape, colour, radius = _subject(rng, world, scale)
    hx = _EXTENT[shape][0]
    half_wall = max(0.045, 1.25 * world.pixel)
    centre = ex / 2
    radius = min(radius, (centre - half_wall - world.pixel - 0.12) / (2 * hx))  # room to move before the wall
    margin = _margins(world, shape, radius)
    face = centre - half_wall - hx * radius  # the centre's x when touching the wall's left face
    e = _middle_event(rng, frames)
    bounce = e - rng.uniform(0.25, 0.75)  # in (e - 1, e): e is the first frame after the bounce
    room = face - margin[0]  # it stays fully in view before and after the bounce
    speed = rng.uniform(0.75, 1.0) * room / max(bounce, frames - 1 - bounce)
    t = np.arange(frames, dtype=np.float64)
    xs = face - np.abs(face - (face - speed * bounce + speed * t))  # elastic reflection at the face
    y = rng.uniform(margin[1], ey - margin[1])
    first = np.stack([xs, np.full(frames, y)], 1)
    second = np.stack([ex - xs, np.full(frames, y)], 1)  # the mirror image: right of the wall
    return _Pair(_Body(shape, colour, radius, first), _Body(shape, colour, radius, second), e,
                 (centre - half_wall, centre + half_wall))


def _gravity(rng: np.random.Generator, world: _World, scale: float) -> _Pair:
    ex, ey = world.extent
    frames = world.frames
    shape, colour, radius = _subject(rng, world, scale)
    margin = _margins(world, shape, radius)
    y0 = margin[1] + rng.uniform(0.0, 0.08)
    drop = rng.uniform(0.65, 0.9) * (ey - margin[1] - y0)
    near_rest = rng.uniform(0.0, 0.4)  # initial downward speed, in units of g x 1 frame
    steps = frames - 1
    g = drop / (steps * near_rest + steps**2 / 2)  # so that it has fallen `drop` at the last frame
    t = np.arange(frames, dtype=np.float64)
    ys = y0 + near_rest * g * t + g * t**2 / 2
    x0 = rng.uniform(margin[0], ex - margin[0])
    x1 = np.clip(x0 + rng.uniform(-0.2, 0.2), margin[0], ex - margin[0])
    xs = np.linspace(x0, x1, frames)
    falling = np.stack([xs, ys], 1)
    return _Pair(_Body(shape, colour, radius, falling), _Body(shape, colour, radius, falling[::-1].copy()), frames // 2)


_BUILDERS = {"permanence": _permanence, "continuity": _continuity, "shape": _shape, "colour": _colour,
             "solidity": _solidity, "gravity": _gravity}


def _distractors(rng: np.random.Generator, world: _World, pair: _Pair, count: int) -> list[_Body]:
    """`count` smaller objects moving with constant velocity and bouncing off the borders and each other
    (synthetic.simulate), in colours the subject never has."""
    if count == 0:
        return []
    subjects = [b for b in (pair.first, pair.second) if b is not None]
    taken = {tuple(b.colour) for b in subjects}
    free = [name for name in COLOUR_NAMES if tuple(COLOURS[name]) not in taken]
    colours = [free[i] for i in rng.choice(len(free), size=count, replace=False)]
    shapes = [SHAPES[i] for i in rng.integers(0, len(SHAPES), count)]
    radii = rng.uniform(0.5, 0.8, count) * subjects[0].radius
    extent = world.extent
    position = rng.uniform(radii[:, None], extent - radii[:, None], (count, 2))
    angles = rng.uniform(-math.pi, math.pi, count)
    velocity = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.012, 0.035, count)[:, None]
    scene = Scene(shapes=shapes, colours=colours, sizes=["small"] * count, radii=radii, position=position,
                  velocity=velocity, speed="slow", gravity=False, reversed=False, background=np.zeros(3))
    positions, _, _ = simulate(scene, world.frames, world.width / world.height)  # (T, n, 2)
    return [_Body(shapes[i], np.array(COLOURS[colours[i]]), float(radii[i]), positions[:, i]) for i in range(count)]


def _draw(world: _World, background: np.ndarray, bodies: list[_Body], bar: tuple[float, float] | None,
          bar_colour: np.ndarray) -> np.ndarray:
    """Render (T, H, W, 3) float32 in [0, 1]: a flat background, `bodies` in order (later on top), anti-aliased,
    then the full-height bar on top of everything."""
    unit = world.unit
    ys = (np.arange(world.height, dtype=np.float32) + 0.5)[None, :, None] / unit  # (1, H, 1)
    xs = (np.arange(world.width, dtype=np.float32) + 0.5)[None, None, :] / unit  # (1, 1, W)
    canvas = np.empty((world.frames, world.height, world.width, 3), dtype=np.float32)
    canvas[:] = background.astype(np.float32)
    for body in bodies:
        dx = xs - body.positions[:, 0, None, None].astype(np.float32)  # (T, 1, W)
        dy = ys - body.positions[:, 1, None, None].astype(np.float32)  # (T, H, 1)
        alpha = np.clip(0.5 - _signed_distance(body.shape, dx, dy, body.radius) * unit, 0.0, 1.0)  # (T, H, W)
        canvas += alpha[..., None] * (body.colour.astype(np.float32) - canvas)
    if bar is not None:
        left, right = bar
        distance = np.abs(xs - (left + right) / 2) - (right - left) / 2  # (1, 1, W), negative inside
        alpha = np.clip(0.5 - distance * unit, 0.0, 1.0)
        canvas += alpha[..., None] * (bar_colour.astype(np.float32) - canvas)
    return canvas


def _pixels(world: _World, body: _Body | None) -> np.ndarray:
    """(T, 2) subject centre in pixels, NaN when absent."""
    if body is None:
        return np.full((world.frames, 2), np.nan)
    return body.positions * world.unit


# ---------------------------------------------------------------------------------------------- user folders


def write_matched_folder(sets: Iterable[MatchedSet], root: str | Path, fps: int = 8) -> Path:
    """Write sets as ``root/<violation>/<name>/{possible,impossible}/NN.mp4`` (+ ``event.txt`` when known), each
    file atomically, clips numbered in their order within the set so `read_matched_folder` reads them back in
    the same order. H.264 is lossy, and odd sizes come back padded to even by one edge row / column. A set
    folder that already holds other clips is an error (they would join the set). Returns `root`."""
    root = Path(root)
    seen: set[tuple[str, str]] = set()
    for matched in sets:
        for part in (matched.violation, matched.name):
            if not part or part in (".", "..") or "/" in part or "\\" in part or part.startswith("."):
                raise DataError(f"write_matched_folder: {part!r} cannot be a folder name (violation / set name)")
        if (matched.violation, matched.name) in seen:
            raise DataError(f"write_matched_folder: two sets named {matched.violation}/{matched.name}")
        seen.add((matched.violation, matched.name))
        folder = root / matched.violation / matched.name
        flags = [bool(f) for f in matched.impossible.tolist()]
        targets = []
        for kind, flag in (("possible", False), ("impossible", True)):
            picked = [k for k, f in enumerate(flags) if f == flag]
            targets += [(folder / kind / f"{n:02d}.mp4", k) for n, k in enumerate(picked)]
        wanted = {path for path, _ in targets}
        stale = sorted(str(p.relative_to(folder)) for kind in ("possible", "impossible") for p in _clip_files(folder / kind)
                       if p not in wanted)
        if stale:
            raise DataError(f"write_matched_folder: {folder} already holds other clips ({', '.join(stale[:4])}); "
                            f"write to an empty folder")
        for path, k in targets:
            write_video(path, matched.videos[k], fps=fps)
        if matched.event_frame is not None:
            with atomic_path(folder / "event.txt") as tmp:
                tmp.write_text(f"{int(matched.event_frame)}\n")
    return root


def read_matched_folder(root: str | Path, frames: int | None = None,
                        size: tuple[int, int] | None = None) -> list[MatchedSet]:
    """Read matched sets from ``root/<violation>/<set>/{possible,impossible}/`` (see the module docstring).

    Args:
        root: the folder.
        frames: keep the first `frames` frames of every clip (a clip shorter than that is an error); by default
            all frames, and all clips of a set must then have the same number of frames.
        size: (H, W) to resize every clip to (bilinear, antialiased); by default all clips must share one size.

    Every problem is a one-line DataError naming the set folder (or the file). Returns the sets sorted by
    violation folder, then set folder; each set's videos (K, 3, T, H, W) hold its possible clips, then its
    impossible ones, each sorted by file name.
    """
    root = Path(root)
    layout = ("root/<violation>/<set>/possible/*.mp4 and root/<violation>/<set>/impossible/*.mp4 "
              "(optional root/<violation>/<set>/event.txt)")
    if not root.is_dir():
        raise DataError(f"read_matched_folder: {root} is not a folder; expected {layout}")
    if frames is not None and (int(frames) != frames or frames < 1):
        raise DataError(f"read_matched_folder: frames must be a positive integer, got {frames}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    found = []  # (violation, set folder)
    for violation in _subfolders(root):
        if (violation / "possible").is_dir() or (violation / "impossible").is_dir():
            raise DataError(f"read_matched_folder: {violation} looks like a set folder, but sets go one level deeper: "
                            f"expected {layout}")
        found += [(violation.name, folder) for folder in _subfolders(violation)]
    if not found:
        raise DataError(f"read_matched_folder: no matched sets under {root}; expected {layout}")
    # first check every set and probe every clip, so a layout problem shows before any long read
    plans = []
    first_size: tuple[Path, int, int] | None = None
    for violation, folder in found:
        clips, lengths, flags = [], [], []
        counts = {}
        for kind in ("possible", "impossible"):
            if not (folder / kind).is_dir():
                raise DataError(f"matched set {folder}: no {kind}/ folder; expected {layout}")
            files = _clip_files(folder / kind)
            counts[kind] = len(files)
            clips += files
            flags += [kind == "impossible"] * len(files)
        for kind, count in counts.items():
            if count == 0:
                raise DataError(f"matched set {folder}: {kind}/ has no video clips ({', '.join(CLIP_EXTENSIONS)}); "
                                f"a set needs at least one possible and one impossible clip")
        if counts["impossible"] != counts["possible"]:
            twin = "missing twin" if counts["impossible"] < counts["possible"] else "extra twin"
            raise DataError(f"matched set {folder}: {twin}: possible/ has {_clips(counts['possible'])} but impossible/ has "
                            f"{_clips(counts['impossible'])}; a set needs as many impossible clips as possible ones")
        for k, path in enumerate(clips):
            try:
                probe = probe_video(path)
            except DataError as error:
                raise DataError(f"matched set {folder}: {error}") from None
            lengths.append(max(1, round(probe.duration * probe.fps)))
            if size is None:
                if first_size is None:
                    first_size = (path, probe.height, probe.width)
                elif (probe.height, probe.width) != first_size[1:]:
                    raise DataError(
                        f"matched set {folder}: {path.relative_to(folder)} is {probe.height}x{probe.width} (HxW) but "
                        f"{first_size[0]} is {first_size[1]}x{first_size[2]}; all clips must share one size, or pass "
                        f"size=(H, W) to resize them")
            clips[k] = (path, probe.height, probe.width)
        names = [str(path.relative_to(folder)) for path, _, _ in clips]
        if frames is None and len(set(lengths)) > 1:
            listed = ", ".join(f"{n}={t}" for n, t in zip(names, lengths))
            raise DataError(f"matched set {folder}: clips have different numbers of frames ({listed}); all clips of a "
                            f"set must be equally long, or pass frames=N to keep the first N of each")
        if frames is not None:
            short = [(n, t) for n, t in zip(names, lengths) if t < frames]
            if short:
                listed = ", ".join(f"{n}={t}" for n, t in short)
                raise DataError(f"matched set {folder}: clips shorter than frames={frames} ({listed})")
        length = int(frames) if frames is not None else lengths[0]
        event = _read_event(folder, length)
        plans.append((violation, folder, clips, flags, length, event))
    sets = []
    for violation, folder, clips, flags, length, event in plans:
        videos = []
        for path, height, width in clips:
            try:
                video = read_clip(path, length, (height, width))  # (3, T, h, w) at the file's own size
            except DataError as error:
                raise DataError(f"matched set {folder}: {error}") from None
            videos.append(_resize(video, size) if size is not None else video)
        sets.append(MatchedSet(
            name=folder.name, violation=violation, videos=torch.stack(videos),  # (K, 3, T, H, W)
            impossible=torch.tensor(flags, dtype=torch.bool), event_frame=event,
            info={"paths": [str(path) for path, _, _ in clips]},
        ))
    return sets


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _clip_files(folder: Path) -> list[Path]:
    """Video files directly in `folder`, sorted by name (hidden files, e.g. unfinished atomic writes, skipped);
    an entry with a video extension that is not a file is an error."""
    if not folder.is_dir():
        return []
    entries = sorted((p for p in folder.iterdir() if p.suffix.lower() in CLIP_EXTENSIONS and not p.name.startswith(".")),
                     key=lambda p: p.name)
    for path in entries:
        if not path.is_file():
            raise DataError(f"matched set {folder.parent}: {path} is not a readable video file")
    return entries


def _clips(count: int) -> str:
    return f"{count} clip{'' if count == 1 else 's'}"


def _read_event(folder: Path, length: int) -> int | None:
    path = folder / "event.txt"
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"matched set {folder}: cannot read event.txt ({type(error).__name__})") from None
    try:
        event = int(text.strip())
    except ValueError:
        raise DataError(f"matched set {folder}: event.txt must hold one integer (the event frame), "
                        f"got {text.strip()[:40]!r}") from None
    if not 0 <= event < length:
        raise DataError(f"matched set {folder}: event.txt says frame {event}, outside the clips' frames 0..{length - 1}")
    return event


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, T, h, w) -> (3, T, H, W), bilinear with antialiasing."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    frames = video.permute(1, 0, 2, 3)  # (T, 3, h, w)
    resized = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.permute(1, 0, 2, 3).clamp(-1, 1).contiguous()


__all__ = ["MATCHED_VIOLATIONS", "CLIP_EXTENSIONS", "MatchedSet", "render_matched_set", "matched_sets",
           "read_matched_folder", "write_matched_folder"]
