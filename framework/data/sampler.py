"""The one batch sampler of every datamodule, and the DataLoader that resumes mid-epoch.

`BucketBatchSampler` orders an epoch as a pure function of (seed, epoch), optionally gives every batch one
(T, H, W) drawn from a list of shapes (buckets), and splits each *global* batch between distributed ranks;
`ResumableDataLoader` remembers how many batches of which epoch it has handed out, so Lightning saves that
in checkpoints and a resumed run continues with the next batch (skipped batches are never loaded).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import ComponentError

# Lightning cannot tell that a batch sampler of its own kind returns every index at predict time; this one does
# (it never drops a batch: the last one is smaller, or topped up across ranks)
warnings.filterwarnings("ignore", message="You are using a custom batch sampler `BucketBatchSampler` for prediction")


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BucketBatchSampler(Sampler):
    """Batches of dataset indices, or of (index, (T, H, W)) with one shape (bucket) per batch when `shapes`
    is given.

    Each epoch the indices are permuted (if `shuffle`) by a generator seeded with (seed, epoch) — epoch 0
    for unshuffled splits, so every validation sees the same batches — and cut into *global* batches of
    batch_size x world_size. A bucket comes to each batch in one of two ways:

    * drawn: every index fits every bucket (a renderer, e.g. SyntheticWorld); each global batch draws its
      shape from `shapes` with probabilities `weights` (default uniform) from the same generator;
    * assigned: `assignment[i]` is the bucket of index i (a file's nearest size, e.g. VideoFolder); each
      bucket's indices are permuted and cut into global batches on their own, then the batches of all
      buckets are shuffled together, so a bucket's share of the batches is its share of the data.

    Rank r yields the r-th slice of batch_size of every global batch, so W processes see exactly the global
    batches (and shapes) one process with batch_size x W sees. With more than one rank the last global batch
    of each bucket is topped up from the start of its order, so every rank gets the same number of equally
    sized batches.

    `set_epoch` (called by Lightning before every epoch) picks the epoch; `start` skips that many batches
    of it (set by `ResumableDataLoader` to resume). Rank and world size default to torch.distributed's.
    """

    def __init__(self, length: int, batch_size: int, shapes: list[tuple[int, int, int]] | None = None,
                 shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 weights: list[float] | None = None, assignment: list[int] | None = None):
        self.length, self.batch_size, self.shapes, self.shuffle, self.seed = length, batch_size, shapes, shuffle, seed
        self._rank, self._world_size = rank, world_size
        self.epoch, self.start = 0, 0
        self.weights = None if weights is None else np.asarray(weights, dtype=float) / float(sum(weights))
        self.assignment = None if assignment is None else np.asarray(assignment)

    @property
    def rank_and_size(self) -> tuple[int, int]:
        rank, size = distributed_rank_and_size()
        return (rank if self._rank is None else self._rank, size if self._world_size is None else self._world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_step = self.batch_size * self.rank_and_size[1]
        if self.assignment is None:
            return math.ceil(self.length / per_step)
        return sum(math.ceil(n / per_step) for n in np.bincount(self.assignment) if n)

    def global_batches(self, epoch: int) -> list[tuple[np.ndarray, tuple[int, int, int] | None]]:
        """The epoch's global batches: (indices (<= batch_size x world_size,), shape or None)."""
        _, size = self.rank_and_size
        per_step = self.batch_size * size
        rng = np.random.default_rng([self.seed, epoch if self.shuffle else 0])
        if self.assignment is not None:
            return self._assigned_batches(rng, per_step, size)
        order = self._cut(rng.permutation(self.length) if self.shuffle else np.arange(self.length), per_step, size)
        if not self.shapes:
            return [(indices, None) for indices in order]
        picks = rng.choice(len(self.shapes), len(order), p=self.weights)
        return [(indices, self.shapes[p]) for indices, p in zip(order, picks)]

    def _assigned_batches(self, rng: np.random.Generator, per_step: int, size: int) -> list:
        batches = []
        for bucket, shape in enumerate(self.shapes):
            members = np.flatnonzero(self.assignment == bucket)
            if len(members):
                members = rng.permutation(members) if self.shuffle else members
                batches += [(indices, shape) for indices in self._cut(members, per_step, size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    @staticmethod
    def _cut(order: np.ndarray, per_step: int, size: int) -> list[np.ndarray]:
        """`order` in global batches of `per_step`; with several ranks the last one is topped up."""
        count = math.ceil(len(order) / per_step)
        if size > 1 and len(order) % per_step:
            order = np.resize(order, count * per_step)
        return [order[i * per_step : (i + 1) * per_step] for i in range(count)]

    def __iter__(self) -> Iterator[list]:
        rank, _ = self.rank_and_size
        for indices, shape in self.global_batches(self.epoch)[self.start :]:
            mine = indices[rank * self.batch_size : (rank + 1) * self.batch_size]
            yield [int(i) for i in mine] if shape is None else [(int(i), shape) for i in mine]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `BucketBatchSampler` with Lightning's resumable-dataloader protocol.

    Its state is (epoch, batches handed out in that epoch): Lightning's fit loop saves `state_dict()` in
    every checkpoint and calls `load_state_dict` on resume, and the next pass over the loader starts after
    the batches already consumed in that epoch (the sampler skips them: nothing is rendered or decoded).
    Each pass also hands the sampler's epoch to a dataset that has `set_epoch`.
    """

    _state: dict[str, int] = {"epoch": 0, "batches": 0}
    _resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # a generator: this runs at the first next(), after Lightning's set_epoch
        sampler, resume = self.batch_sampler, self._resume
        self._resume = None
        sampler.start = resume["batches"] if resume is not None and resume["epoch"] == sampler.epoch else 0
        self._state = {"epoch": sampler.epoch, "batches": sampler.start}
        if callable(getattr(self.dataset, "set_epoch", None)):  # e.g. VideoFolder's seeded clip starts
            self.dataset.set_epoch(sampler.epoch)  # (persistent workers keep the epoch they started with)
        try:
            for batch in super().__iter__():
                self._state["batches"] += 1
                yield batch
        finally:
            sampler.start = 0

    def state_dict(self) -> dict[str, int]:
        return dict(self._resume or self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
        self.batch_sampler.set_epoch(self._resume["epoch"])


def parse_buckets(buckets: list, weights: list[float] | None, owner: str) -> tuple[list[tuple[int, int, int]], list[float] | None]:
    """A recipe's buckets as (T, H, W) tuples and its weights (one positive number per bucket), or a one-line
    ComponentError naming `owner` and the bad entry."""
    shapes = []
    for bucket in buckets:
        if not (isinstance(bucket, (list, tuple)) and len(bucket) == 3 and all(isinstance(n, int) and n >= 1 for n in bucket)):
            raise ComponentError(f"{owner}.buckets: each bucket is three ints (T, H, W) >= 1, got {bucket!r}")
        shapes.append(tuple(int(n) for n in bucket))
    if not shapes:
        raise ComponentError(f"{owner}.buckets: give at least one (T, H, W)")
    if len(set(shapes)) < len(shapes):
        raise ComponentError(f"{owner}.buckets: {sorted({s for s in shapes if shapes.count(s) > 1})} listed twice")
    if weights is not None and (len(weights) != len(shapes) or any(w <= 0 for w in weights)):
        raise ComponentError(f"{owner}.bucket_weights: one positive weight per bucket ({len(shapes)}), got {list(weights)}")
    return shapes, None if weights is None else [float(w) for w in weights]


class SplitLoaders:
    """Lightning's train/val/test/predict dataloader hooks of a datamodule that makes every split's loader with
    one method, ``dataloader(split)`` (SyntheticWorld, ActionWorld)."""

    def train_dataloader(self) -> ResumableDataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> ResumableDataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> ResumableDataLoader:
        return self.dataloader("test")

    def predict_dataloader(self) -> ResumableDataLoader:
        return self.dataloader("predict")
