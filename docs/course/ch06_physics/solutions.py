"""Chapter 6 — the JEPA comparison and intuitive physics. Reference solutions.

The same three functions as `exercises.py`, solved. `test_grader.py` compares them with
`framework/evaluation/statistics.py` and `framework/evaluation/probes.py`; `run.py` scores the predictive
surprise of real models on matched possible / impossible sets with them.
"""
from __future__ import annotations

import numpy as np
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
    s = np.asarray(scores, dtype=np.float64)  # (S, K)
    imp = np.asarray(impossible, dtype=bool)  # (S, K)
    above = (s[:, :, None] > s[:, None, :]) + 0.5 * (s[:, :, None] == s[:, None, :])  # (S, K, K): i beats j
    pairs = imp[:, :, None] & ~imp[:, None, :]  # (S, K, K): i impossible, j possible
    per_set = (above * pairs).sum(axis=(1, 2)) / pairs.sum(axis=(1, 2))  # (S,)
    return float(per_set.mean())


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
    x = np.asarray(values, dtype=np.float64)  # (S,)
    rows = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))  # (R, S) unit indices
    means = x[rows].mean(axis=1)  # (R,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(low), float(high)


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
    B, L, D = tokens.shape
    H, d = queries.shape
    x = tokens.float().view(B, L, H, d)  # (B, L, H, d)
    weights = (torch.einsum("blhd,hd->bhl", x, queries.float()) / d**0.5).softmax(dim=-1)  # (B, H, L)
    return torch.einsum("bhl,blhd->bhd", weights, x).reshape(B, D)  # (B, D)
