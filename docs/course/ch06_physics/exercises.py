"""Chapter 6 — the JEPA comparison and intuitive physics. Your file.

Fill in the three functions below (replace each `raise NotImplementedError(...)`), then grade them:

    patchworld course check 6                 # or, by hand:
    python -m pytest -q docs/course/ch06_physics

`python docs/course/ch06_physics/run.py --student` scores real models' predictive surprise on matched
possible / impossible sets with your functions. The reference is `solutions.py`; try first.
"""
from __future__ import annotations

import numpy as np  # noqa: F401  (the statistics are plain numpy)
import torch


def relative_accuracy(scores, impossible) -> float:
    """Relative accuracy of surprise scores on matched sets.

    Within each set, look at every (impossible clip, possible clip) pair: the pair counts 1 when the
    impossible clip scores higher, 1/2 on a tie, 0 otherwise. A set's relative accuracy is the mean over its
    pairs; the result is the mean over sets (0.5 = chance, 1 = every impossible clip more surprising than
    every possible clip of its own set). Comparing only within a set is the point: clips of one set share
    everything but the violation, so a model cannot win by finding some scenes easier than others.

    Args:
        scores: (S, K) array-like, the surprise of the K clips of each of S sets.
        impossible: (S, K) bool array-like, True for the impossible clips (each set has both kinds).

    Returns:
        a float in [0, 1].
    """
    raise NotImplementedError(
        "with s = np.asarray(scores) (S, K): wins[s, i, j] = (s_i > s_j) + 0.5 * (s_i == s_j) by broadcasting "
        "s[:, :, None] against s[:, None, :]; pairs[s, i, j] = impossible_i and possible_j; per set: "
        "(wins * pairs).sum / pairs.sum; return the mean over sets (not over all pairs pooled)"
    )


def bootstrap_ci(values, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The mean of per-unit values and its percentile-bootstrap confidence interval.

    Draw `resamples` resamples of the S units with replacement, all at once:
    ``np.random.default_rng(seed).integers(0, S, size=(resamples, S))``; take the mean of each; the interval
    is the central `level` of those means (``np.quantile`` at (1 - level) / 2 and (1 + level) / 2). The
    unit is whatever is independent: for physics the matched set (a set's clips are not independent).

    Args:
        values: (S,) array-like, one value per unit (e.g. each set's relative accuracy).
        resamples: bootstrap resamples.
        level: the interval's coverage, in (0, 1).
        seed: the resampling seed (the same seed gives the same interval).

    Returns:
        (mean, low, high) as floats.
    """
    raise NotImplementedError(
        "rows = np.random.default_rng(seed).integers(0, S, size=(resamples, S)); means = x[rows].mean(axis=1); "
        "low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2]); return (x.mean(), low, high)"
    )


def attentive_pool(tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Learned-query cross-attention pooling (V-JEPA's attentive probe, one task), without projections.

    Split the D channels into H heads of d = D / H channels. Head h has one learned query q_h (d,): its
    attention weights over the L tokens are softmax_l(<q_h, x_l,h> / sqrt(d)) and its output is the
    weighted sum of the tokens' channel slice h. The pooled vector is the H head outputs concatenated.
    Zero queries give uniform weights, i.e. mean pooling; training moves each query to where the label is.

    Args:
        tokens: (B, L, D) frozen features (the probe layer-norms them beforehand).
        queries: (H, d) learned queries, H * d = D.

    Returns:
        (B, D) pooled features, differentiable in `queries` (and `tokens`).
    """
    raise NotImplementedError(
        "view tokens as (B, L, H, d); logits (B, H, L) = einsum('blhd,hd->bhl', x, queries) / sqrt(d); softmax over "
        "L; out (B, H, d) = einsum('bhl,blhd->bhd', weights, x); reshape to (B, D)"
    )
