"""Chapter 5 — V-JEPA: masks, EMA targets, collapse and how to see it. Your file.

Fill in the four functions below (replace each `raise NotImplementedError(...)`), then grade them:

    patchworld course check 5                 # or, by hand:
    python -m pytest -q docs/course/ch05_vjepa

`python docs/course/ch05_vjepa/run.py --student` trains the real `VJEPA` objective with your masks and
your EMA update and plots your collapse statistics. The reference is `solutions.py`; try first.
"""
from __future__ import annotations

import math  # noqa: F401  (you will want math.exp / math.log / math.sqrt)

import torch


def multiblock_mask(batch: int, grid: tuple[int, int, int], blocks: int, scale: float,
                    aspect_ratio: tuple[float, float] = (0.75, 1.5),
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One V-JEPA mask family for a batch: the union of `blocks` rectangles of spatial cells, each a tube
    through every token frame, is the prediction target; every other cell is context.

    For each clip: draw `blocks` rectangles, each covering about `scale` of the h x w cells, with aspect
    ratio (height / width) log-uniform in `aspect_ratio`, at a uniformly random place inside the frame;
    their union is the clip's target cells. If the blocks cover the whole frame, give one random cell back
    to the context. Then, so the batch stacks into tensors, keep a *uniformly random* subset of every
    clip's target cells of the batch's smallest target count (and the same for the context cells), sorted.
    Finally expand each kept cell to its tube: cell c of frame f is token f * h * w + c (time-major).

    Args:
        batch: clips B.
        grid: the token grid (t, h, w).
        blocks: rectangles per clip.
        scale: fraction of the h * w cells one rectangle covers (0 < scale <= 1).
        aspect_ratio: (low, high) range of a rectangle's height / width.
        generator: draw every random number from it (None: the global RNG).

    Returns:
        context (B, Nc) and target (B, Nt) long token indices, each row sorted, disjoint within a row.
    """
    raise NotImplementedError(
        "build covered = zeros(B, h, w, bool); per clip and block: aspect = exp(log(low) + u * log(high/low)) with "
        "u = torch.rand((), generator=generator), bh = round(sqrt(scale*h*w*aspect)), bw = round(sqrt(scale*h*w/aspect)) "
        "(clamped to 1..h, 1..w), top/left from torch.randint; mark the rectangle. Flatten to (B, h*w). Keep a random "
        "subset of k = min count per row: random scores, non-members set to 2, argsort, take k, sort. Tubes: "
        "cells[:, None, :] + arange(t)[None, :, None] * h * w, flattened."
    )


@torch.no_grad()
def ema_update(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """Move the target encoder's parameters towards the online (context) encoder's, in place:
    ``target <- momentum * target + (1 - momentum) * online``, tensor by tensor.

    Args:
        target: the target encoder's parameters (modified in place).
        online: the context encoder's parameters, the same shapes in the same order (not modified).
        momentum: in [0, 1]; 1 keeps the target, 0 copies the online encoder.
    """
    raise NotImplementedError(
        "for each pair (t, o): t.mul_(momentum).add_(o, alpha=1 - momentum) — in place, so the encoder's own "
        "parameter tensors change (t = ... would only rebind a local name)"
    )


def feature_std(features: torch.Tensor) -> torch.Tensor:
    """Collapse monitor 1: the std of each channel across every token and clip, averaged over channels.

    Args:
        features: (..., D), e.g. (B, N, D) target-encoder features.

    Returns:
        0-dim float tensor; 0 when every row is the same vector (a collapsed representation).
    """
    raise NotImplementedError("reshape to (rows, D) in float32, take .std(dim=0) over the rows, then the mean over D")


def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Collapse monitor 2: RankMe, exp of the entropy of the normalised singular values of (N, D) features.

    Args:
        features: (N, D), e.g. mean-pooled clip features (B, D).
        eps: added to the normalised singular values (and guards the division) so log is finite.

    Returns:
        0-dim float tensor between 1 (every row along one direction) and min(N, D).
    """
    raise NotImplementedError(
        "s = torch.linalg.svdvals(features.float()); p = s / s.sum().clamp_min(eps) + eps; return exp(-(p * log p).sum())"
    )
