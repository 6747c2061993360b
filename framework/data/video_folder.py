"""VideoFolder: clips from a folder of real video files, read with PyAV.

Layout: ``root/<label>/<name>.mp4`` (labels from sub-folder names; files directly under root get no
label) with optional captions in ``<name>.txt`` beside each video. Every file is probed once at setup;
one that fails to decode is skipped with a warning naming it, and a folder with no readable video is an
error. Clips are sampled by timestamp: a random start in training, the middle of the video otherwise.
"""
from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .video_io import VideoInfo, probe_video, read_clip

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


def scan_folder(root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoInfo]:
    """Probe every video-like file under `root`; warn about and skip the unreadable ones."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"VideoFolder: {root} is not a folder")
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    readable = []
    for path in candidates:
        try:
            readable.append(probe_video(path))
        except DataError as error:
            warnings.warn(f"VideoFolder: skipping {error}", stacklevel=2)
    if not readable:
        found = sum(1 for p in root.rglob("*") if p.is_file())
        raise DataError(
            f"VideoFolder: no readable video in {root} ({found} files, {len(candidates)} with a video extension "
            f"{'/'.join(e.lstrip('.') for e in extensions)})"
        )
    return readable


class VideoClips(Dataset):
    def __init__(self, videos: list[VideoInfo], root: Path, classes: list[str], frames: int,
                 size: tuple[int, int], fps: float | None, random_start: bool):
        self.videos, self.root, self.classes = videos, root, classes
        self.frames, self.size, self.fps, self.random_start = frames, tuple(size), fps, random_start

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        info = self.videos[index]
        span = max(0.0, info.duration - self.frames / (self.fps or info.fps))
        start = random.uniform(0.0, span) if self.random_start else span / 2
        caption_file = info.path.with_suffix(".txt")
        relative = info.path.relative_to(self.root)
        label = self.classes.index(relative.parts[0]) if len(relative.parts) > 1 else -1
        return {
            "video": read_clip(info.path, self.frames, self.size, start, self.fps),
            "caption": caption_file.read_text().strip() if caption_file.exists() else "",
            "labels": {"label": label},
            "index": index,
        }


def collate(items: list[dict]) -> dict:
    """Stack videos and labels; keep captions as a list."""
    return {
        "video": torch.stack([item["video"] for item in items]),
        "caption": [item["caption"] for item in items],
        "labels": {"label": torch.tensor([item["labels"]["label"] for item in items])},
        "index": torch.tensor([item["index"] for item in items]),
    }


class VideoFolder(pl.LightningDataModule):
    """Clips from a folder of videos (labels from sub-folders, captions from sidecar .txt files).

    Args:
        root: the folder.
        frames: frames per clip.
        size: (H, W); frames are resized to cover it and centre-cropped.
        fps: sampling rate of clip frames; default each file's own rate.
        batch_size: clips per batch.
        val_fraction: fraction of files (chosen by a hash of the path, so stable) held out for val/test.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, root: str, frames: int = 16, size: tuple[int, int] = (64, 64), fps: float | None = None,
                 batch_size: int = 8, val_fraction: float = 0.1, num_workers: int = 0):
        super().__init__()
        self.root, self.frames, self.size, self.fps = Path(root), frames, tuple(size), fps
        self.batch_size, self.val_fraction, self.num_workers = batch_size, val_fraction, num_workers
        self.splits: dict[str, VideoClips] = {}

    @property
    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        videos = scan_folder(self.root)
        held_out = [v for v in videos if _stable_fraction(v.path.relative_to(self.root)) < self.val_fraction]
        train = [v for v in videos if v not in held_out] or videos
        self.splits = {"train": self.clips(train, random_start=True), "val": self.clips(held_out or videos),
                       "all": self.clips(videos)}

    def clips(self, videos: list[VideoInfo], random_start: bool = False) -> VideoClips:
        """A dataset of clips from `videos` with this folder's frames, size, fps and classes (each clip from a
        random start, or from the middle of its video)."""
        return VideoClips(videos, self.root, self.classes, self.frames, self.size, self.fps, random_start)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("all", False)


def _stable_fraction(path: Path) -> float:
    """A number in [0, 1) that depends only on the path."""
    return int(hashlib.sha1(str(path).encode()).hexdigest()[:8], 16) / 2**32
