"""bf16 on CPUs: the shipped recipes ask for it because it is ~5x faster than fp32 on CPUs with native bf16
(AVX-512 with BF16, or AMX), but on CPUs without it (e.g. AVX2-only) PyTorch emulates bf16 and a matmul or
conv is 25-40x *slower*. So a bf16 request on such a CPU runs in fp32, with one line saying so.

``PATCHWORLD_CPU_BF16=1`` keeps bf16 whatever the CPU, ``=0`` never uses it on a CPU.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import torch

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")


@lru_cache(maxsize=1)
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU computes bf16 natively (or the user said so with PATCHWORLD_CPU_BF16)."""
    forced = os.environ.get("PATCHWORLD_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = cpuinfo.read_text(errors="ignore")
        return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))
    try:  # elsewhere: what oneDNN reports (AVX-512 or better)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def _say_once(what: str) -> None:
    if not getattr(_say_once, "said", False):
        print(f"patchworld: this CPU has no native bf16 (AVX-512 / AMX), where bf16 is many times slower than "
              f"fp32: {what} runs in fp32 here (PATCHWORLD_CPU_BF16=1 keeps bf16)", file=sys.stderr)
        _say_once.said = True


def trainer_precision(precision, accelerator: str | None) -> object:
    """The Lightning precision to use: `precision`, except a bf16 one on a CPU without native bf16."""
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())
    if str(precision) in BF16_PRECISIONS and on_cpu and not cpu_bf16_is_fast():
        _say_once(f"trainer.precision {precision}")
        return "32-true"
    return precision


def autocast_bf16(wanted: bool, device: str | torch.device = "cpu") -> bool:
    """Whether to autocast to bf16 on `device` when bf16 is `wanted`."""
    if wanted and torch.device(device).type == "cpu" and not cpu_bf16_is_fast():
        _say_once("bf16 autocast")
        return False
    return wanted
