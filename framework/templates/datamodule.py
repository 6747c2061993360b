"""`MyDataModule`: procedurally drawn bars sliding across the frame (no files needed), with a caption and a
direction label per clip; every clip is a pure function of (seed, split, index)."""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

DIRECTIONS = ("left", "right", "up", "down")
SPLITS = {"train": 0, "val": 1, "predict": 2}


class Bars(Dataset):
    """Clips of one bright bar moving over a dark background: {"video" (3, T, H, W) in [-1, 1], "caption",
    "labels": {"direction"}, "index"}."""

    def __init__(self, length: int, split: str, frames: int, size: tuple[int, int], seed: int):
        self.length, self.split, self.frames, self.size, self.seed = length, split, frames, tuple(size), seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        height, width = self.size
        direction = int(rng.integers(0, len(DIRECTIONS)))
        colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        start, speed = rng.integers(0, max(height, width)), rng.integers(1, 3)
        video = np.zeros((self.frames, height, width, 3), dtype=np.float32)  # (T, H, W, 3) in [0, 1]
        for t in range(self.frames):
            step = (start + (speed if direction in (1, 3) else -speed) * t)
            if direction < 2:  # a vertical bar moving sideways
                video[t, :, step % width] = colour
            else:  # a horizontal bar moving up or down
                video[t, step % height] = colour
        clip = torch.from_numpy(video).permute(3, 0, 1, 2) * 2 - 1  # (3, T, H, W) in [-1, 1]
        return {"video": clip, "caption": f"a bar moves {DIRECTIONS[direction]}",
                "labels": {"direction": direction}, "index": index}


class MyDataModule(pl.LightningDataModule):
    """Bars sliding left, right, up or down over a dark frame; no files needed.

    Args:
        frames: frames per clip.
        size: (H, W) of each frame.
        batch_size: clips per batch.
        train_size: clips in the training split.
        val_size: clips in the validation split.
        predict_size: clips in the predict split.
        seed: every clip is a function of (seed, split, index).
    """

    def __init__(self, frames: int = 4, size: tuple[int, int] = (32, 32), batch_size: int = 8,
                 train_size: int = 512, val_size: int = 16, predict_size: int = 4, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.splits = {split: Bars(n, split, frames, size, seed)
                       for split, n in (("train", train_size), ("val", val_size), ("predict", predict_size))}

    def loader(self, split: str) -> DataLoader:
        # the train order is shuffled by a seeded generator: a fresh run yields the same batches
        generator = torch.Generator().manual_seed(self.splits[split].seed) if split == "train" else None
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=split == "train", generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict")
