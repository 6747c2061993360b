"""Multi-block 3D masks (V-JEPA): rectangles of spatial cells, each extended as a tube through all time.

A *mask family* is a number of blocks of a given spatial scale (fraction of the frame's cells) and aspect
ratio range. V-JEPA uses two families every step:

* short-range: the union of 8 blocks of ~15% of the frame each (together roughly half of the cells);
* long-range: the union of 2 blocks of ~70% of the frame each (together roughly 90% of the cells).

For one clip, the masked cells (the union of the blocks) are the prediction *targets*; every other cell is
*context*. Masks are sampled in space and repeated over every token frame, so a target region is hidden
for the whole clip and cannot be copied from a neighbouring frame.

Equal token counts per batch: the union of overlapping blocks covers a different number of cells in each
clip, but a batch needs one tensor of context indices and one of target indices. For each family we take
the smallest context count and the smallest target count in the batch and keep a *uniformly random*
subset of that size from every clip's context cells and from its target cells (then sort it in token
order). Random subsampling, unlike truncating a sorted index list, favours no region of the frame (not the
top rows, not the first frames). A dropped target cell is simply not predicted; a dropped context cell is
simply not shown. No cell ever moves from one set to the other, so the context never contains a target.

A *future* mask (`future_mask`) is the causal alternative: the last k token frames (every cell) are the
targets and all earlier token frames the context, so the predictor has to extrapolate the clip from its
past, which needs motion (a tube mask hides a region for the whole clip, so a static appearance guess
scores well). `future_frames` gives k as a count (int >= 1) or as a fraction of the token frames.

Every sampler takes `generator`: one generator for the whole batch, or a list with one per clip (see
`patchworld.randomness`), in which case each clip's blocks and choices come from its own generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from patchworld import ComponentError, DataError
from patchworld.randomness import Generators, draw, of_sample

Size3 = tuple[int, int, int]


@dataclass(frozen=True)
class MaskFamily:
    """`blocks` rectangles, each covering `scale` of the h x w cells, aspect ratio (h/w) in `aspect_ratio`."""

    blocks: int
    scale: float
    aspect_ratio: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self):
        if self.blocks < 1 or not 0 < self.scale <= 1:
            raise ComponentError(f"a mask family needs blocks >= 1 and 0 < scale <= 1, got {self}")
        low, high = self.aspect_ratio
        if not 0 < low <= high:
            raise ComponentError(f"aspect_ratio must be (low, high) with 0 < low <= high, got {self.aspect_ratio}")


#: V-JEPA's two families
SHORT_RANGE = MaskFamily(blocks=8, scale=0.15)
LONG_RANGE = MaskFamily(blocks=2, scale=0.7)


@dataclass
class BlockMask:
    """Token indices for one family over a batch: `context` (B, Nc) and `target` (B, Nt), sorted, disjoint."""

    context: torch.Tensor
    target: torch.Tensor


def block_size(family: MaskFamily, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """A random (bh, bw) with bh * bw ~ scale * h * w and bh / bw log-uniform in the aspect-ratio range."""
    low, high = family.aspect_ratio
    u = torch.rand((), generator=generator).item()
    aspect = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    area = family.scale * height * width
    bh = min(height, max(1, round(math.sqrt(area * aspect))))
    bw = min(width, max(1, round(math.sqrt(area / aspect))))
    return bh, bw


def spatial_block_mask(batch: int, height: int, width: int, family: MaskFamily,
                       generator: Generators = None) -> torch.Tensor:
    """(B, h, w) bool, True where a cell is covered by the union of the family's blocks."""
    covered = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        g = of_sample(generator, b)
        for _ in range(family.blocks):
            bh, bw = block_size(family, height, width, g)
            top = int(torch.randint(0, height - bh + 1, (), generator=g))
            left = int(torch.randint(0, width - bw + 1, (), generator=g))
            covered[b, top : top + bh, left : left + bw] = True
    return covered


def random_subset(member: torch.Tensor, count: int, generator: Generators = None) -> torch.Tensor:
    """member (B, S) bool with at least `count` True per row -> (B, count) sorted indices of a uniformly
    random subset of each row's True entries."""
    scores = draw(torch.rand, generator, *member.shape).masked_fill(~member, 2.0)  # (B, S), non-members sort last
    return scores.argsort(dim=1)[:, :count].sort(dim=1).values


def multiblock_mask(batch: int, grid: Size3, family: MaskFamily, generator: Generators = None) -> BlockMask:
    """Sample one family's context/target token indices on a (t, h, w) token grid (tokens time-major).

    At least one cell stays context and at least one becomes a target in every clip (a clip whose blocks
    cover the whole frame has one random cell returned to the context).
    """
    t, h, w = grid
    if h * w < 2:
        raise DataError(f"multi-block masks need at least 2 spatial cells, got a token grid of {grid}")
    covered = spatial_block_mask(batch, h, w, family, generator).flatten(1)  # (B, h*w)
    full = covered.all(dim=1)
    for b in full.nonzero().flatten().tolist():  # give one random cell back to the context
        covered[b, int(torch.randint(0, h * w, (), generator=of_sample(generator, b)))] = False
    n_target = int(covered.sum(1).min())
    n_context = int((~covered).sum(1).min())
    target = random_subset(covered, n_target, generator)  # (B, Kt) spatial cells
    context = random_subset(~covered, n_context, generator)  # (B, Kc)
    return BlockMask(context=tubes(context, t, h * w), target=tubes(target, t, h * w))


def tubes(cells: torch.Tensor, frames: int, cells_per_frame: int) -> torch.Tensor:
    """(B, K) spatial cells -> (B, frames * K) token indices of the same cells in every frame, sorted."""
    offsets = torch.arange(frames).view(1, frames, 1) * cells_per_frame  # (1, t, 1)
    return (cells.unsqueeze(1) + offsets).flatten(1)  # time-major, so already sorted


def future_token_frames(future: float, frames: int) -> int:
    """The number k of final token frames a future mask hides: `future` itself when it is an integer >= 1,
    else round(future * frames); always clipped to 1..frames - 1 (at least one frame of context)."""
    if future <= 0:
        raise ComponentError(f"future_frames must be > 0 (a count of token frames or a fraction), got {future}")
    if frames < 2:
        raise DataError(f"a future mask needs at least 2 token frames, got {frames}")
    k = int(future) if future >= 1 else round(future * frames)
    return min(frames - 1, max(1, k))


def future_mask(batch: int, grid: Size3, future: float) -> BlockMask:
    """Context: every token of the first t - k token frames; target: every token of the last k
    (`future_token_frames`). The same for every clip (nothing random), tokens time-major and sorted."""
    t, h, w = grid
    k = future_token_frames(future, t)
    split = (t - k) * h * w
    context = torch.arange(split).expand(batch, -1)
    target = torch.arange(split, t * h * w).expand(batch, -1)
    return BlockMask(context=context.contiguous(), target=target.contiguous())


def sample_masks(batch: int, grid: Size3, families: tuple[MaskFamily, ...] = (SHORT_RANGE, LONG_RANGE),
                 generator: Generators = None) -> list[BlockMask]:
    """One `BlockMask` per family for a batch of clips on a (t, h, w) token grid."""
    return [multiblock_mask(batch, grid, family, generator) for family in families]
