"""``patchworld judge``: how far apart two sets of clips are, in a frozen encoder's feature space (JEDi-style).

Each clip becomes one feature vector: the encoder's tokens (`WorldModel.features`, e.g. V-JEPA's target
encoder) averaged. Two sets of vectors are compared by

* **MMD** with the polynomial kernel k(x, y) = (x.y / d + 1)^3 (KID's kernel; JEDi's distance), the unbiased
  estimate for two equal-sized sets: exactly 0 for identical sets, about 0 for two samples of one
  distribution, larger the more the distributions differ;
* **Fréchet distance** between Gaussians fitted to each set (FVD's distance, biased upwards for few clips).

Each comes with a 95% bootstrap interval (both sets resampled) and its value on the first 8, 16, 32, ...
clips, so one sees whether there are enough. A set is a folder of videos (every .mp4 under it, e.g. a
``patchworld predict`` run's predictions) or SyntheticWorld clips of the recipe's data (``synthetic:SPLIT``);
``--degrade`` spoils the second set in a known way (blur, colour, freeze, shuffle) to see the distance respond.

    patchworld judge --config vjepa-tiny --ckpt_path last --data sora-tiny \\
        --real synthetic:test --fake runs/sora-tiny/lightning_logs/version_0/predictions
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from patchworld import DataError, PatchworldError
from patchworld.recipes import load_world
from patchworld.parsing import CommandParser
from patchworld.data.synthetic import SPLITS, SyntheticClips
from patchworld.data.video_io import atomic_path, check_writable, read_clip
from patchworld.evaluation.features import extract_features
from patchworld.evaluation.statistics import Estimate
from patchworld.precision import autocast_bf16

from .adherence import clips

DEGRADATIONS = ("blur", "colour", "freeze", "shuffle")


# ---- the distances --------------------------------------------------------------------------------------
def mmd_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The terms of the unbiased MMD^2 of two equal-sized feature sets a, b (n, d) with the polynomial kernel
    k(x, y) = (x.y / d + 1)^3: h (n, n) with h_ij = k(a_i, a_j) + k(b_i, b_j) - k(a_i, b_j) - k(a_j, b_i);
    MMD^2 is the mean of h over i != j (clip i of each set is a unit, paired arbitrarily)."""
    if a.shape != b.shape or len(a) < 2:
        raise DataError(f"MMD needs two sets of the same size, at least 2 clips each; got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    kernel = lambda x, y: (x @ y.T / a.shape[1] + 1) ** 3  # noqa: E731  (n, n)
    cross = kernel(a, b)
    return kernel(a, a) + kernel(b, b) - cross - cross.T


def off_diagonal_mean(h: torch.Tensor | np.ndarray, units: np.ndarray | None = None) -> float:
    """The mean of h over pairs of different units: all i != j, or, for a resample `units` (indices that may
    repeat), the pairs of positions whose units differ (a unit paired with its own copy is left out, as the
    unbiased estimate leaves out i = j)."""
    h = np.asarray(h)
    units = np.arange(len(h)) if units is None else units
    different = units[:, None] != units[None, :]
    return float(h[np.ix_(units, units)][different].mean())


def polynomial_mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD^2 of two equal-sized sets of features a, b (n, d) with the kernel (x.y / d + 1)^3: exactly
    0 for identical sets."""
    return off_diagonal_mean(mmd_pairs(a, b).numpy())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) of Gaussians fitted to features a (n, d), b (m, d)."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # tr (S_a S_b)^1/2 = sum of the square roots of the eigenvalues of S_a S_b (real and >= 0 up to rounding)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0).sqrt().sum()
    return max(0.0, float((mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace))


DISTANCES = {"mmd": polynomial_mmd, "frechet": frechet_distance}


def distance_estimate(name: str, a: torch.Tensor, b: torch.Tensor, resamples: int = 500, seed: int = 0,
                      level: float = 0.95) -> Estimate:
    """The distance `name` between feature sets a and b (n, d) with a percentile-bootstrap interval over
    clips: each resample draws n of the n units (clip i of each set) with replacement. MMD's resamples leave
    out the pairs of a unit with its own copy (so the interval holds 0 for two samples of one distribution);
    Fréchet's take them as they come (a duplicated clip shrinks the covariance: its interval is the spread
    of a distance biased upwards, more so with few clips)."""
    rng = np.random.default_rng(seed)
    n = len(a)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    if name == "mmd":
        h = mmd_pairs(a, b).numpy()
        value, values = off_diagonal_mean(h), [off_diagonal_mean(h, units) for units in draws]
    else:
        value, values = frechet_distance(a, b), [frechet_distance(a[units], b[units]) for units in draws]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(value, float(low), float(high))


def clip_counts(n: int) -> list[int]:
    """8, 16, 32, ... up to n, and n itself."""
    return sorted({*(2 ** k for k in range(3, int(math.log2(max(n, 8))) + 1) if 2 ** k <= n), n})


# ---- the sets -------------------------------------------------------------------------------------------
def degrade(video: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """Spoil clips (B, 3, T, H, W) in [-1, 1] in a known way, more with `strength` in [0, 1] (0: unchanged).
    blur: Gaussian blur of sigma 2 x strength pixels; colour: red raised and blue lowered by `strength` / 2
    (of the [-1, 1] range), clipped, which moves every colour off SyntheticWorld's palette; freeze: frame t
    shows frame round(t (1 - strength)) (1: the first frame throughout); shuffle: a `strength` fraction of
    each clip's frames swapped cyclically."""
    if kind not in DEGRADATIONS:
        raise DataError(f"unknown degradation {kind!r}; valid: {', '.join(DEGRADATIONS)}")
    if not 0 <= strength <= 1:
        raise DataError(f"degradation strength {strength} is out of range: give a value in [0, 1]")
    if strength == 0:
        return video
    T = video.shape[2]
    if kind == "blur":
        sigma = 2.0 * strength
        size = 2 * math.ceil(3 * sigma) + 1
        frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        blurred = gaussian_blur(frames, [size, size], [sigma, sigma])
        return blurred.unflatten(0, (video.shape[0], T)).transpose(1, 2)  # (B, 3, T, H, W)
    if kind == "colour":
        offset = torch.tensor([strength / 2, 0.0, -strength / 2], dtype=video.dtype)[:, None, None, None]
        return (video + offset).clamp(-1, 1)
    if kind == "freeze":
        order = torch.round(torch.arange(T) * (1 - strength)).long()
        return video[:, :, order]
    generator = torch.Generator().manual_seed(seed)  # shuffle
    out = video.clone()
    moved = max(2, round(strength * T))
    for b in range(video.shape[0]):
        frames = torch.randperm(T, generator=generator)[:moved]  # these frames move one place round the cycle
        out[b, :, frames] = video[b, :, frames.roll(1)]
    return out


def read_set(source: str, count: int, data, shape: tuple[int, int, int]) -> torch.Tensor:
    """`count` clips (count, 3, T, H, W) from a folder of videos (sorted, read at `shape`) or from
    ``synthetic:SPLIT`` (SyntheticWorld clips rendered like the datamodule `data`'s)."""
    if source.startswith("synthetic"):
        template = getattr(data, "splits", {}).get("train")
        if not isinstance(template, SyntheticClips):
            raise DataError(f"{source}: the --data recipe's data is not SyntheticWorld")
        return clips(source.partition(":")[2] or "test", count, template, shape=shape)["video"]
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{source}: not a folder of videos nor synthetic:SPLIT (splits: {', '.join(SPLITS)})")
    files = sorted(folder.rglob("*.mp4"))
    if len(files) < count:
        raise DataError(f"{source}: {len(files)} .mp4 files, fewer than the {count} clips asked for (--clips)")
    return torch.stack([read_clip(path, shape[0], shape[1:]) for path in files[:count]])


# ---- the command ----------------------------------------------------------------------------------------
def judge(argv: list[str]) -> int:
    """Distance (MMD, Fréchet) between two sets of clips in a frozen encoder's feature space."""
    parser = CommandParser(prog="patchworld judge", description=__doc__)
    parser.add_argument("--config", required=True, help="the encoder's recipe (path or shipped name)")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="the encoder's trained checkpoint ('last': the recipe's newest); none: random-init control")
    parser.add_argument("--data", type=str | None, default=None,
                        help="the recipe whose data synthetic:SPLIT renders and whose clip shape is read (default --config)")
    parser.add_argument("--real", required=True, help="a folder of videos, or synthetic:SPLIT")
    parser.add_argument("--fake", required=True, help="a folder of videos, or synthetic:SPLIT")
    parser.add_argument("--degrade", type=str | None, default=None,
                        help=f"spoil the --fake set: NAME:STRENGTH with NAME one of {', '.join(DEGRADATIONS)}, STRENGTH in [0, 1]")
    parser.add_argument("--clips", type=int, default=64, help="clips of each set")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples of each interval")
    parser.add_argument("--precision", type=str, default="bf16", help="bf16 or 32 (autocast for the encoder)")
    parser.add_argument("--out", type=str | None, default=None, help="write results.json here")
    args = parser.parse_args(argv)
    if args.clips < 8:
        raise PatchworldError(f"--clips {args.clips}: give at least 8 clips per set")
    degradation = parse_degradation(args.degrade)
    if args.out:
        check_writable(args.out)
    world, data = load_world(args.config, args.ckpt_path)
    world.eval()
    if args.data:
        data = load_world(args.data)[1]
    template = getattr(data, "splits", {}).get("train")
    if template is None:
        raise PatchworldError(f"{args.data or args.config}: its data has no train split to read the clip shape from")
    shape = (template.frames, *template.size)
    sets = [read_set(source, args.clips, data, shape) for source in (args.real, args.fake)]
    if degradation:
        sets[1] = degrade(sets[1], *degradation)
    autocast = torch.bfloat16 if autocast_bf16(args.precision == "bf16") else None
    features = [extract_features(world, ({"video": video[i:i + 32]} for i in range(0, len(video), 32)),
                                 autocast_dtype=autocast).pooled for video in sets]  # (clips, D): tokens averaged
    results = {"encoder": args.config, "ckpt_path": args.ckpt_path, "real": args.real, "fake": args.fake,
               "degrade": args.degrade, "clips": args.clips, "distances": {}}
    print(f"{'distance':<9} {'value':>10} {'95% interval':>24}   " + " ".join(f"{f'n={n}':>9}" for n in clip_counts(args.clips)))
    for name in DISTANCES:
        estimate = distance_estimate(name, *features, resamples=args.resamples)
        by_count = {n: DISTANCES[name](features[0][:n], features[1][:n]) for n in clip_counts(args.clips)}
        results["distances"][name] = estimate.as_dict() | {"by_clips": by_count}
        print(f"{name:<9} {estimate.value:>10.4g} {f'[{estimate.low:.4g}, {estimate.high:.4g}]':>24}   "
              + " ".join(f"{value:>9.4g}" for value in by_count.values()))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return 0


def parse_degradation(text: str | None) -> tuple[str, float] | None:
    """'blur:0.5' -> ('blur', 0.5); None -> None."""
    if text is None:
        return None
    name, _, strength = text.partition(":")
    try:
        value = float(strength)
    except ValueError:
        raise DataError(f"--degrade {text!r}: give NAME:STRENGTH, e.g. blur:0.5 (names: {', '.join(DEGRADATIONS)})") from None
    if name not in DEGRADATIONS or not 0 <= value <= 1:
        raise DataError(f"--degrade {text!r}: NAME one of {', '.join(DEGRADATIONS)}, STRENGTH in [0, 1]")
    return name, value
