"""The one batch sampler of every datamodule, and the DataLoader that resumes mid-epoch.

`BucketBatchSampler` orders an epoch as a pure function of (seed, epoch), optionally gives every batch one
(T, H, W) drawn from a list of shapes (buckets), and splits each *global* batch between distributed ranks;
`ResumableDataLoader` remembers how many batches of which epoch it has handed out, so Lightning saves that
in checkpoints and a resumed run continues with the next batch (skipped batches are never loaded).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BucketBatchSampler(Sampler):
    """Batches of dataset indices, or of (index, (T, H, W)) with one shape per batch when `shapes` is given.

    Each epoch the indices are permuted (if `shuffle`) by a generator seeded with (seed, epoch) — epoch 0
    for unshuffled splits, so every validation sees the same batches — and cut into *global* batches of
    batch_size x world_size, each with a shape drawn from `shapes` by the same generator. Rank r yields the
    r-th slice of batch_size of every global batch, so W processes see exactly the global batches one
    process with batch_size x W sees. With more than one rank the last global batch is topped up from the
    start of the order, so every rank gets the same number of equally sized batches.

    `set_epoch` (called by Lightning before every epoch) picks the epoch; `start` skips that many batches
    of it (set by `ResumableDataLoader` to resume). Rank and world size default to torch.distributed's.
    """

    def __init__(self, length: int, batch_size: int, shapes: list[tuple[int, int, int]] | None = None,
                 shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None):
        self.length, self.batch_size, self.shapes, self.shuffle, self.seed = length, batch_size, shapes, shuffle, seed
        self._rank, self._world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def rank_and_size(self) -> tuple[int, int]:
        rank, size = distributed_rank_and_size()
        return (rank if self._rank is None else self._rank, size if self._world_size is None else self._world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.length / (self.batch_size * self.rank_and_size[1]))

    def global_batches(self, epoch: int) -> list[tuple[np.ndarray, tuple[int, int, int] | None]]:
        """The epoch's global batches: (indices (<= batch_size x world_size,), shape or None)."""
        _, size = self.rank_and_size
        per_step = self.batch_size * size
        rng = np.random.default_rng([self.seed, epoch if self.shuffle else 0])
        order = rng.permutation(self.length) if self.shuffle else np.arange(self.length)
        if size > 1 and len(order) % per_step:  # top up the last global batch
            order = np.resize(order, len(self) * per_step)
        picks = rng.integers(0, len(self.shapes), len(self)) if self.shapes else [None] * len(self)
        return [(order[i * per_step : (i + 1) * per_step], self.shapes[p] if self.shapes else None)
                for i, p in enumerate(picks)]

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
