"""Chapter 5 — V-JEPA: masks, EMA targets, collapse and how to see it. Reference solutions.

The same four functions as `exercises.py`, solved. `run.py` plugs them into the real `VJEPA` objective
(`plugins/vjepa.py`); `test_grader.py` compares them with `plugins/masks.py` and `plugins/vjepa.py`.
"""
from __future__ import annotations

import math

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
    t, h, w = grid
    low, high = aspect_ratio
    area = scale * h * w  # cells per block
    covered = torch.zeros(batch, h, w, dtype=torch.bool)  # (B, h, w) the union of the blocks
    for b in range(batch):
        for _ in range(blocks):
            aspect = math.exp(math.log(low) + float(torch.rand((), generator=generator)) * math.log(high / low))
            bh = min(h, max(1, round(math.sqrt(area * aspect))))
            bw = min(w, max(1, round(math.sqrt(area / aspect))))
            top = int(torch.randint(0, h - bh + 1, (), generator=generator))
            left = int(torch.randint(0, w - bw + 1, (), generator=generator))
            covered[b, top : top + bh, left : left + bw] = True
    covered = covered.flatten(1)  # (B, h*w)
    for b in covered.all(dim=1).nonzero().flatten().tolist():  # every clip keeps some context
        covered[b, int(torch.randint(0, h * w, (), generator=generator))] = False

    def kept(member: torch.Tensor) -> torch.Tensor:  # (B, h*w) bool -> (B, k) sorted random members
        count = int(member.sum(1).min())
        scores = torch.rand(member.shape, generator=generator).masked_fill(~member, 2.0)  # members first
        return scores.argsort(dim=1)[:, :count].sort(dim=1).values

    offsets = torch.arange(t).view(1, t, 1) * (h * w)  # (1, t, 1): the first token of each frame
    context, target = ((kept(m).unsqueeze(1) + offsets).flatten(1) for m in (~covered, covered))  # (B, t*k)
    return context, target


@torch.no_grad()
def ema_update(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """Move the target encoder's parameters towards the online (context) encoder's, in place:
    ``target <- momentum * target + (1 - momentum) * online``, tensor by tensor.

    Args:
        target: the target encoder's parameters (modified in place).
        online: the context encoder's parameters, the same shapes in the same order (not modified).
        momentum: in [0, 1]; 1 keeps the target, 0 copies the online encoder.
    """
    for t, o in zip(target, online, strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def feature_std(features: torch.Tensor) -> torch.Tensor:
    """Collapse monitor 1: the std of each channel across every token and clip, averaged over channels.

    Args:
        features: (..., D), e.g. (B, N, D) target-encoder features.

    Returns:
        0-dim float tensor; 0 when every row is the same vector (a collapsed representation).
    """
    rows = features.float().reshape(-1, features.shape[-1])  # (B*N, D)
    return rows.std(dim=0).mean()


def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Collapse monitor 2: RankMe, exp of the entropy of the normalised singular values of (N, D) features.

    Args:
        features: (N, D), e.g. mean-pooled clip features (B, D).
        eps: added to the normalised singular values (and guards the division) so log is finite.

    Returns:
        0-dim float tensor between 1 (every row along one direction) and min(N, D).
    """
    singular = torch.linalg.svdvals(features.float())  # (min(N, D),)
    p = singular / singular.sum().clamp_min(eps) + eps
    return torch.exp(-(p * p.log()).sum())
