"""What training a model costs: FLOPs of one training step (torch.utils.flop_counter, plus the CPU attention
kernel it misses), parameters and peak memory of a block of work. Used by `patchworld compare` to put each
model's cost next to its results."""
from __future__ import annotations

import copy
import os
import threading

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak on a GPU; on CPU the rise of the process's resident
    set size over its value at entry, sampled every 20 ms from /proc/self/statm (Linux; else None)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as file:
                return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = self._rss()
        self._peak, self._stop = self._start, threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                rss = self._rss()
                self._peak = max(self._peak, rss) if rss is not None and self._peak is not None else None

        self._thread = threading.Thread(target=sample, daemon=True)
        if self._start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return False
        if self._start is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._rss() or 0) - self._start) / 2**20
        return False


def _cpu_attention_forward(query, key, value, *args, **kwargs) -> int:  # shapes, from FlopCounterMode
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return 2 * sdpa_flop_count(query, key, value)  # its four matmuls, no recomputation


def flop_counter() -> FlopCounterMode:
    """torch.utils.flop_counter's counter, also counting the fused attention kernel that SDPA runs on a CPU.
    The stock counter does not know that kernel, so on a CPU it would leave every attention FLOP out. Counted
    as model FLOPs: the forward's two matmuls and the backward's four, not the scores the fused backward
    recomputes, so attention counts the same whichever SDPA backend runs (the math backend's own matmuls)."""
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
    })


def train_step_flops(model, batch: dict) -> int:
    """FLOPs of one training step (forward + backward of the objective's loss) on `batch`, counted by
    `flop_counter` on a copy of the model (the model itself is untouched)."""
    twin = copy.deepcopy(model).train()
    batch = twin.objective.prepare_batch(dict(batch))
    with flop_counter() as counter:
        twin.objective.training_step(twin, batch)["loss"].backward()
    return int(counter.get_total_flops())


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else 0


