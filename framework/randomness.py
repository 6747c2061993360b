"""Randomness that is a pure function of (run seed, step, sample): what makes resume and DDP exact.

Objectives never draw training masks, noise or timesteps from torch's global generator. They ask for
per-sample generators keyed on

    (run seed, step, the sample's dataset index batch["index"][b], stream)

where step is the world's `global_step` while training and the fixed `VALIDATION` key otherwise (every
validation sees the same masks and noise), and stream names the draw ("masks", "noise", ...) so two draws
of one step are independent. A resumed run therefore draws exactly what the uninterrupted run drew, and a
sample draws the same values whichever DDP rank, batch or position it lands in. Draws shared by the whole
batch (e.g. one crop window) come from `batch_generator`, keyed on (run seed, step, stream).

The run seed is `WorldModel.seed` (torch's initial seed when the world was built, i.e. the recipe's
`seed_everything`, kept in checkpoints). Generators live on the CPU; move the draws to the device. A world
trained by a hand-written loop (no Trainer, so no step) draws from torch's global generator instead.

    gens = sample_generators(world, batch, "noise")                   # B generators
    noise = draw(torch.randn, gens, B, *latents.shape[1:])            # (B, c, t, h, w), row b from gens[b]
"""
from __future__ import annotations

import hashlib
import struct
from typing import Callable, Sequence

import torch

#: the step key of every validation / evaluation draw (never a real training step)
VALIDATION = 2**64 - 1
#: the sample key of batch-level draws (never a real dataset index)
WHOLE_BATCH = 2**64 - 1

#: one generator for all rows, one per sample, or None for torch's global generator
Generators = torch.Generator | Sequence[torch.Generator] | None


def keyed_generator(seed: int, step: int, sample: int, stream: str) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, step, sample, stream)."""
    words = struct.pack("<3Q", seed % 2**64, step % 2**64, sample % 2**64) + stream.encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(words, digest_size=8).digest(), "little"))


def step_key(world) -> int | None:
    """The step the world's draws are keyed on: its global step while a Trainer trains it, `VALIDATION`
    when it is not training, None when it trains without a Trainer (a hand-written loop has no step
    counter, so its draws come from torch's global generator, which the caller seeds)."""
    if not world.training:
        return VALIDATION
    return world.global_step if world._trainer is not None else None


def sample_generators(world, batch: dict, stream: str) -> list[torch.Generator] | None:
    """One generator per sample of `batch` for draw `stream`, keyed on (run seed, step, batch["index"][b])
    (None, i.e. torch's global generator, when there is no step: see `step_key`).

    A batch without "index" (e.g. plain tensors) keys its samples by position 0..B-1."""
    step = step_key(world)
    if step is None:
        return None
    index = batch.get("index")
    index = range(batch["video"].shape[0]) if index is None else index.tolist()
    return [keyed_generator(world.seed, step, int(i), stream) for i in index]


def batch_generator(world, stream: str) -> torch.Generator | None:
    """One generator for a draw shared by the whole batch, keyed on (run seed, step, stream) (None without
    a step, see `step_key`)."""
    step = step_key(world)
    return None if step is None else keyed_generator(world.seed, step, WHOLE_BATCH, stream)


def of_sample(generators: Generators, b: int) -> torch.Generator | None:
    """The generator for row b: its own one from a per-sample list, else the shared one."""
    return generators[b] if isinstance(generators, (list, tuple)) else generators


def draw(fn: Callable[..., torch.Tensor], generators: Generators, batch: int, *shape: int) -> torch.Tensor:
    """(batch, *shape) CPU values of `fn(size, generator=...)` (torch.rand, torch.randn, a partial of
    torch.randint, ...): row b from generators[b] for a per-sample list, else all rows from one generator."""
    if isinstance(generators, (list, tuple)):
        assert len(generators) == batch, f"{len(generators)} generators for a batch of {batch}"
        return torch.stack([fn(shape, generator=g) for g in generators])
    return fn((batch, *shape), generator=generators)
