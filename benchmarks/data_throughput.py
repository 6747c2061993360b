"""SyntheticWorld rendering speed against the training speed it has to feed.

Prints clips/s of rendering (one process, no workers) for a few clip sizes, and, measured in the same run,
the clips/s that the videomae-tiny model consumes in training (bf16 autocast), with their ratio: above 1
the data is not the bottleneck even without DataLoader workers.

    python benchmarks/data_throughput.py
"""
from __future__ import annotations

import time

import torch

from patchworld import WorldModel
from patchworld.data import SyntheticWorld
from patchworld_plugins import Pixels, VideoMAE, ViT


def render_rate(frames: int, size: tuple[int, int], clips: int = 64) -> float:
    dataset = SyntheticWorld(frames=frames, size=size).splits["train"]
    start = time.perf_counter()
    for index in range(clips):
        dataset[index]
    return clips / (time.perf_counter() - start)


def training_rate(batch_size: int = 16, steps: int = 5) -> float:
    model = WorldModel(Pixels(), VideoMAE(0.9, 128, 2, 4), ViT(192, 6, 3, patch_size=(2, 8, 8)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.rand(batch_size, 3, 16, 64, 64) * 2 - 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.objective.training_step(model, {"video": video})["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    torch.manual_seed(0)
    train = training_rate()
    print(f"videomae-tiny training consumes {train:.1f} clips/s (16x64x64, bf16 autocast, {torch.get_num_threads()} threads)\n")
    print(f"{'clip (T x H x W)':<20}{'render clips/s':>16}{'ratio to training':>20}")
    for frames, size in [(16, (64, 64)), (16, (64, 112)), (32, (128, 128))]:
        rate = render_rate(frames, size)
        print(f"{f'{frames} x {size[0]} x {size[1]}':<20}{rate:>16.1f}{rate / train:>20.2f}")


if __name__ == "__main__":
    main()
