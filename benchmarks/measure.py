"""What the benchmark scripts share: device sync, the matmul peak they compute MFU against, FLOPs of a step,
interleaved timing of two contenders, the memory a step holds, and the casts and copies a step makes. Imported by the scripts next to it
(`python benchmarks/<name>.py` puts this folder on the path); nothing here asserts a speed."""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from patchworld.evaluation.cost import flop_counter


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: str, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of a size x size matmul in `dtype` (the best of `repeats`, after one warm-up); size 2048 on a
    CPU, 8192 on a GPU (big enough to reach the tensor cores' peak)."""
    size = size or (8192 if torch.device(device).type == "cuda" else 2048)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(step: Callable[[], None], device: str) -> float:
    """Seconds of one call of `step`."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def interleaved(a: Callable[[], None], b: Callable[[], None], rounds: int, device: str,
                before_round: Callable[[], None] = lambda: None) -> tuple[list[float], list[float]]:
    """Seconds per call of `a` and of `b` over `rounds` rounds in the order A,B, B,A, A,B, ... so that a
    drift of the machine (heat, another process) falls on both; round i's times are paired. `before_round()`
    runs untimed before each round (e.g. to draw the inputs both will use)."""
    times_a, times_b = [], []
    for i in range(rounds):
        before_round()
        if i % 2 == 0:
            times_a.append(timed(a, device))
            times_b.append(timed(b, device))
        else:
            times_b.append(timed(b, device))
            times_a.append(timed(a, device))
    return times_a, times_b


def paired_ratios(times_a: list[float], times_b: list[float]) -> tuple[float, float, float]:
    """(median, min, max) over rounds of time_a / time_b."""
    ratios = [x / y for x, y in zip(times_a, times_b)]
    return statistics.median(ratios), min(ratios), max(ratios)


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (matmuls, convolutions and attention, the CPU's fused attention kernel
    included: `patchworld.evaluation.cost.flop_counter`)."""
    with flop_counter() as counter:
        step()
    return int(counter.get_total_flops())


@contextmanager
def held_memory(device: str | torch.device):
    """The memory a block of work holds at its peak, in MiB, as `box[0]` after the block. On CUDA the
    allocator's peak over its level at entry; on a CPU (no allocator statistics) the bytes of the distinct
    non-parameter tensors autograd saves for the backward pass (activations and autocast's weight copies),
    which is what grows with batch and sequence length."""
    box = [0.0]
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield box
        box[0] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield box
    box[0] = sum(storages.values()) / 2**20


#: the operators that move data without computing: (calls key, million-elements key) in `casts_and_copies`
MOVES = {"aten::_to_copy": ("casts", "cast Melem"), "aten::copy_": ("copies", "copy Melem")}


def casts_and_copies(step: Callable[[], None]) -> dict[str, float]:
    """What one call of `step` moves without computing, from torch's profiler (after one warm-up call): dtype
    casts (``aten::_to_copy``: calls and million elements), other copies (``aten::copy_`` not inside a cast:
    calls and million elements), and the aten operators it calls from Python or autograd (top-level). Counts
    are the same on every CPU, so a CPU whose bf16 is emulated can still tell which code casts less."""
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        step()
    counts = Counter()
    for event in profiler.events():
        shape = event.input_shapes[0] if event.input_shapes and event.input_shapes[0] else []
        parent = event.cpu_parent.name if event.cpu_parent is not None else None
        if event.name in MOVES and parent != "aten::_to_copy":  # a cast's own copy_ is the cast
            calls, elements = MOVES[event.name]
            counts[calls] += 1
            counts[elements] += math.prod(shape) / 1e6
        if event.name.startswith("aten::") and (parent is None or not parent.startswith("aten::")):
            counts["ops"] += 1
    return dict(counts)
