"""Confidence intervals for the model comparison, and whether a difference between two models is real.

Every number `patchworld compare` reports comes as an `Estimate`: a point estimate and a 95%
percentile-bootstrap confidence interval. Every difference between two models is an `Estimate` of the
difference from a *paired* bootstrap (both models resampled on the same units), labelled ``"resolved"``
when its interval excludes 0 and ``"within noise"`` otherwise (`label`).

The resampling unit is whatever is independent:

* probes: the test clip. Correctness is given per probe seed and clip, ``(seeds, clips)``; the seed
  average stays inside each resample (the seeds are the same probes on the same clips, so they are not
  independent draws), and clips are resampled (`accuracy_estimate`, `paired_difference`).
* physics surprise: the matched set. Each of S sets holds K clips, some possible and some impossible, and a
  model gives every clip a surprise score, ``(S, K)``; clips of one set are dependent, so whole sets are
  resampled (`relative_accuracy`, `physics_estimates`, `physics_difference`).

`bootstrap` is the general resampler for any other statistic (it calls the statistic once per resample);
the functions above draw exactly the same resamples for the same seed and number of units, but compute
them in batches, so 2000 resamples take milliseconds. All functions are pure and seeded: the same inputs
and seed give the same interval. Inputs are numpy arrays, torch tensors or nested lists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


__all__ = [
    "Estimate",
    "bootstrap",
    "accuracy_estimate",
    "paired_difference",
    "gap_closed",
    "relative_accuracy",
    "physics_estimates",
    "physics_difference",
    "label",
]

_BATCH = 1 << 20  # elements of one batch of resamples (rows x units); bounds the memory of long resamplings


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile-bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float

    def resolved(self, null: float = 0.0) -> bool:
        """Whether the interval excludes `null` (for a difference between two models: whether it is real)."""
        return bool(self.low > null or self.high < null)

    def as_dict(self) -> dict:
        """``{"value", "low", "high"}`` as plain floats (for JSON reports)."""
        return {"value": self.value, "low": self.low, "high": self.high}


def label(difference: Estimate) -> str:
    """``"resolved"`` when the interval of a difference excludes 0, else ``"within noise"``."""
    return "resolved" if difference.resolved(0.0) else "within noise"


# --------------------------------------------------------------------------------------------- resampling


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_options(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer; got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}")


def _index_batches(units: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples, in batches of rows: (rows, units) indices drawn with replacement. Depends
    only on (units, resamples, seed), so every function here draws the same resamples for the same seed."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BATCH // units)
    for start in range(0, resamples, rows):
        yield rng.integers(0, units, size=(min(rows, resamples - start), units))


def _counts(indices: np.ndarray, units: int) -> np.ndarray:
    """(rows, units) indices -> (rows, units) multiplicity of each unit in each resample."""
    rows = indices.shape[0]
    flat = indices + units * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * units).reshape(rows, units)


def _interval(value: float, resampled: np.ndarray, level: float) -> Estimate:
    """Percentile interval of the resampled statistic. Resampled values that equal the point estimate up to
    rounding are taken as equal, so constant data gives low == high == value exactly."""
    value = float(value)
    if np.isnan(value) or np.isnan(resampled).any():
        bad = int(np.isnan(resampled).sum())
        raise ValueError(f"the statistic is NaN (point estimate {value}, {bad} of {len(resampled)} resamples)")
    resampled = np.where(np.isclose(resampled, value, rtol=1e-12, atol=1e-12), value, resampled)
    low, high = np.quantile(resampled, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Estimate(value, float(low), float(high))


def bootstrap(
    statistic: Callable[..., float], *arrays, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Percentile-bootstrap estimate of ``statistic(*arrays)``.

    The arrays share their first axis, the resampling unit (clips, sets); each resample draws that many
    units with replacement, the same rows of every array, and calls ``statistic(*resampled)`` -> float
    (once per resample: keep the statistic cheap, or use the batched functions of this module). The point
    estimate is the statistic of the original arrays; the interval holds the central `level` of the
    resampled values. Constant data gives ``low == high == value``.
    """
    _check_options(resamples, level)
    if not arrays:
        raise ValueError("bootstrap needs at least one array to resample")
    arrays = tuple(_as_array(a) for a in arrays)
    shapes = [a.shape for a in arrays]
    if any(a.ndim == 0 for a in arrays) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"the arrays must share their first axis (the resampling unit); got shapes {shapes}")
    units = shapes[0][0]
    if units == 0:
        raise ValueError(f"nothing to resample: the arrays have no units; got shapes {shapes}")
    value = float(statistic(*arrays))
    resampled = np.fromiter(
        (float(statistic(*(a[rows] for a in arrays))) for batch in _index_batches(units, resamples, seed) for rows in batch),
        dtype=np.float64,
        count=resamples,
    )
    return _interval(value, resampled, level)


def _bootstrap_mean(per_unit: np.ndarray, resamples: int, level: float, seed: int) -> Estimate:
    """`bootstrap` of the mean of per-unit values (same resamples), computed in batches."""
    _check_options(resamples, level)
    units = len(per_unit)
    resampled = np.concatenate(
        [_counts(batch, units) @ per_unit / units for batch in _index_batches(units, resamples, seed)]
    )
    return _interval(per_unit.mean(), resampled, level)


# ---------------------------------------------------------------------------------------- probe accuracy


def _per_clip_accuracy(correct, name: str) -> np.ndarray:
    """(seeds, clips) or (clips,) correctness in [0, 1] (bool, or the fraction of a family's tasks right on a
    clip) -> (clips,) mean over seeds on each clip."""
    c = _as_array(correct)
    if c.ndim not in (1, 2) or c.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, clips) or (clips,) array; got shape {c.shape}")
    if c.dtype != np.bool_ and not ((c >= 0) & (c <= 1)).all():
        raise ValueError(f"{name} must be bool or in [0, 1] (right or wrong on each clip); got values outside [0, 1]")
    return np.atleast_2d(c.astype(np.float64)).mean(axis=0)


def accuracy_estimate(correct, *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Probe accuracy with a bootstrap interval over test clips.

    `correct`: (seeds, clips) bool, whether the probe of each seed is right on each test clip (or a value in
    [0, 1]: the share of a family's tasks it gets right), or (clips,) for one seed. The value is the mean over seeds and clips; the interval resamples clips
    (columns), keeping the seed average inside each resample.
    """
    return _bootstrap_mean(_per_clip_accuracy(correct, "correct"), resamples, level, seed)


def paired_difference(a, b, *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Accuracy of model `a` minus accuracy of model `b`, from a paired bootstrap over their shared test clips.

    `a`, `b`: correctness as for `accuracy_estimate`, (seeds, clips) or (clips,), on the SAME clips in the
    same order (the seed counts may differ). Each resample draws one set of clips for both models, so what
    the models have in common (clips both get right or both get wrong) cancels and the interval is that of
    the difference alone. For physics scores on matched sets use `physics_difference`.
    """
    a_arr, b_arr = _as_array(a), _as_array(b)
    if a_arr.ndim in (1, 2) and b_arr.ndim in (1, 2) and a_arr.shape[-1] != b_arr.shape[-1]:
        raise ValueError(
            f"a and b must be scored on the same test clips (last axis); got shapes {a_arr.shape} and {b_arr.shape}"
        )
    per_clip = _per_clip_accuracy(a_arr, "a") - _per_clip_accuracy(b_arr, "b")
    return _bootstrap_mean(per_clip, resamples, level, seed)


def gap_closed(model, floor, ceiling, *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate | None:
    """The share of the way from `floor` to `ceiling` a model's accuracy covers: (model - floor) / (ceiling -
    floor), 0 at the floor (a random-init control), 1 at the ceiling (a supervised model), with a paired
    bootstrap over the shared test clips (each resample draws one set of clips for all three).

    Correctness as for `paired_difference`, on the SAME clips. None when the ceiling is not above the floor
    (the ratio means nothing there); resamples where it is not are left out of the interval.
    """
    per_clip = [_per_clip_accuracy(x, name) for x, name in ((model, "model"), (floor, "floor"), (ceiling, "ceiling"))]
    if len({len(p) for p in per_clip}) != 1:
        raise ValueError(f"model, floor and ceiling must be scored on the same test clips; got {[len(p) for p in per_clip]}")
    _check_options(resamples, level)
    m, f, c = per_clip
    if c.mean() <= f.mean():
        return None
    units = len(m)
    stacked = np.stack([m, f, c], axis=1)  # (clips, 3)
    means = np.concatenate([_counts(batch, units) @ stacked / units for batch in _index_batches(units, resamples, seed)])
    spread = means[:, 2] - means[:, 1]
    ratio = (means[:, 0] - means[:, 1])[spread > 0] / spread[spread > 0]
    return _interval(float((m.mean() - f.mean()) / (c.mean() - f.mean())), ratio, level)


# ------------------------------------------------------------------------------------- physics surprise


def _matched_sets(scores, impossible, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validated (S, K) float scores and (S, K) bool impossibility."""
    s = _as_array(scores)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] < 2:
        raise ValueError(f"{name} must be (S sets, K >= 2 clips); got shape {s.shape}")
    s = s.astype(np.float64)
    if np.isnan(s).any():
        sets = np.flatnonzero(np.isnan(s).any(axis=1)).tolist()
        raise ValueError(f"{name} contain NaN (in sets {sets[:10]}{' ...' if len(sets) > 10 else ''})")
    imp = _as_array(impossible)
    if imp.shape == s.shape[1:]:
        imp = np.broadcast_to(imp, s.shape)
    elif imp.shape != s.shape:
        raise ValueError(
            f"impossible must be (S, K) = {s.shape} or (K,) = {s.shape[1:]} like {name}; got shape {imp.shape}"
        )
    if imp.dtype != np.bool_ and not np.isin(imp, (0, 1)).all():
        raise ValueError("impossible must be bool or 0/1 (1 = impossible clip)")
    imp = imp.astype(bool)
    for missing, sets in (("impossible", ~imp.any(axis=1)), ("possible", imp.all(axis=1))):
        if sets.any():
            which = np.flatnonzero(sets).tolist()
            raise ValueError(
                f"every matched set needs at least one possible and one impossible clip; "
                f"{len(which)} set(s) have no {missing} clip: {which[:10]}{' ...' if len(which) > 10 else ''}"
            )
    return s, imp


def _set_relative_accuracy(s: np.ndarray, imp: np.ndarray) -> np.ndarray:
    """(S,) fraction of (impossible, possible) pairs of each set where the impossible clip scores higher."""
    higher = s[:, :, None] > s[:, None, :]  # [set, i, j]: clip i above clip j
    tied = s[:, :, None] == s[:, None, :]
    pairs = imp[:, :, None] & ~imp[:, None, :]  # i impossible, j possible
    wins = ((higher + 0.5 * tied) * pairs).sum(axis=(1, 2))
    return wins / pairs.sum(axis=(1, 2))


def relative_accuracy(scores, impossible) -> float:
    """Relative accuracy of surprise scores on matched sets.

    `scores`: (S, K) surprise of the K clips of each of S sets; `impossible`: (S, K) or (K,) bool. Within
    each set, the fraction of (impossible, possible) clip pairs where the impossible clip scores higher
    (ties count 1/2); the mean over sets. 0.5 is chance, 1.0 a perfect separation in every set.
    """
    return float(_set_relative_accuracy(*_matched_sets(scores, impossible)).mean())


def auroc(scores, labels, weights=None):
    """Area under the ROC curve of `scores` (higher = more positive) for binary `labels` (1 = positive):
    the probability that a random positive outscores a random negative, ties counting one half (the
    Mann-Whitney statistic). `weights` (n,) or (R, n): how much each item counts (e.g. its multiplicity in a
    bootstrap resample); with (R, n) rows, one AUROC per row (R,) from a single sort of the scores."""
    scores, labels = _as_array(scores).ravel(), _as_array(labels).ravel().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both classes; got {positives} positives and {negatives} negatives")
    rows = np.ones((1, len(scores))) if weights is None else np.atleast_2d(_as_array(weights))
    order = np.argsort(scores, kind="stable")
    scores, labels, rows = scores[order], labels[order], rows[:, order]
    first = np.searchsorted(scores, scores, side="left")  # each item's tie group is [first, after)
    after = np.searchsorted(scores, scores, side="right")
    positive = np.flatnonzero(labels)
    out, step = [], max(1, _BATCH // len(scores))
    for start in range(0, len(rows), step):
        w = rows[start : start + step]
        below_each = np.zeros((len(w), len(scores) + 1))
        np.cumsum(w * ~labels, axis=1, out=below_each[:, 1:])  # weighted negatives up to each item
        below = below_each[:, first[positive]]
        tied = below_each[:, after[positive]] - below
        wins = (w[:, positive] * (below + 0.5 * tied)).sum(axis=1)
        out.append(wins / (w[:, positive].sum(axis=1) * below_each[:, -1]))
    values = np.concatenate(out)
    return float(values[0]) if weights is None or np.ndim(weights) == 1 else values


def physics_estimates(
    scores, impossible, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Estimate]:
    """``{"relative_accuracy", "auroc"}`` of surprise scores on matched sets, both with intervals over sets.

    Relative accuracy as in `relative_accuracy`; AUROC of all clips pooled across sets (impossible =
    positive; `auroc`). Both resample whole sets — the same resamples for both.
    """
    s, imp = _matched_sets(scores, impossible)
    estimates = {"relative_accuracy": _bootstrap_mean(_set_relative_accuracy(s, imp), resamples, level, seed)}
    clip_set = np.repeat(np.arange(s.shape[0]), s.shape[1])  # each clip weighted by how often its set is drawn
    resampled = np.concatenate(
        [auroc(s, imp, _counts(batch, len(s))[:, clip_set]) for batch in _index_batches(len(s), resamples, seed)]
    )
    estimates["auroc"] = _interval(auroc(s, imp), resampled, level)
    return estimates


def physics_difference(
    scores_a, scores_b, impossible, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Relative accuracy of model `a` minus that of model `b`, from a paired bootstrap over matched sets.

    `scores_a`, `scores_b`: (S, K) surprise of two models on the SAME sets and clips; `impossible`: (S, K)
    or (K,) bool, shared. Each resample draws one collection of sets for both models.
    """
    a, b = _as_array(scores_a), _as_array(scores_b)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must score the same sets and clips; got shapes {a.shape} and {b.shape}")
    per_set = _set_relative_accuracy(*_matched_sets(a, impossible, "scores_a")) - _set_relative_accuracy(
        *_matched_sets(b, impossible, "scores_b")
    )
    return _bootstrap_mean(per_set, resamples, level, seed)
