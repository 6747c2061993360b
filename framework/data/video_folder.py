"""VideoFolder: clips from a folder of real video files, read with PyAV.

Layout: ``root/<label>/<name>.mp4`` (labels from sub-folder names; files directly under root get no
label) with optional captions in ``<name>.txt`` beside each video. With `buckets`, images (.png, .jpg, ...)
are 1-frame videos and every file goes to the bucket nearest its own aspect and length (`assign_buckets`).
Every file is probed once at setup; a file that fails to decode then, or at any later read, is skipped
(its samples are replaced by the next readable one), named once in a warning and counted in a summary at
the end; the folder is an error only when more than ``max_bad_fraction`` of it is unreadable. Entries with a video extension that are not files
(directories, broken links, symlink loops) are reported by name. Clips are sampled by timestamp: in
training from a start that is a pure function of (seed, epoch, index), the middle of the video otherwise.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError, require_positive, require_size2
from .sampler import BucketBatchSampler, ResumableDataLoader, parse_buckets
from .video_io import VideoInfo, probe_video, read_clip

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # 1-frame videos, read when buckets are given


class Unreadable:
    """A folder's unreadable video files (path -> reason), shared by its splits.

    `add` names each file once in a warning and raises a one-line DataError when more than
    `max_bad_fraction` of the folder's `total` video files are unreadable. Inside a DataLoader worker it only
    records (the worker's items carry ``skipped``; the main process adds them, so each file is named once)."""

    def __init__(self, root: Path, total: int, max_bad_fraction: float = 1.0):
        self.root, self.total, self.max_bad_fraction = Path(root), total, max_bad_fraction
        self.files: dict[str, str] = {}

    def add(self, path: str | Path, reason: str, check: bool = True) -> bool:
        """Record `path`; False if it was already known."""
        if str(path) in self.files:
            return False
        self.files[str(path)] = reason
        if torch.utils.data.get_worker_info() is None:
            warnings.warn(f"VideoFolder: skipping {reason}", stacklevel=3)
            if check:
                self.check()
        return True

    @property
    def fraction(self) -> float:
        return len(self.files) / max(self.total, 1)

    def check(self) -> None:
        if self.fraction > self.max_bad_fraction:
            raise DataError(
                f"VideoFolder: {len(self.files)} of {self.total} video files in {self.root} are unreadable "
                f"({self.fraction:.0%}, more than max_bad_fraction={self.max_bad_fraction:g}); "
                f"first: {next(iter(self.files.values()))}")

    def summary(self) -> str:
        names = ", ".join(Path(p).name for p in list(self.files)[:5]) + (", ..." if len(self.files) > 5 else "")
        return (f"VideoFolder: skipped {len(self.files)} of {self.total} video files in {self.root} as unreadable "
                f"({self.fraction:.1%}): {names}")


def scan_folder(root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
                max_bad_fraction: float = 1.0) -> tuple[list[VideoInfo], Unreadable]:
    """Probe every entry under `root` with a video extension. Returns the readable videos and the
    `Unreadable` record of the rest (each named in a warning). Directories with a video extension are
    reported (their contents are scanned as usual); broken links, symlink loops and other non-files count
    as unreadable. A DataError when nothing is readable or more than `max_bad_fraction` is not."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"VideoFolder: {root} is not a folder")
    entries = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions)
    problems: dict[Path, str] = {}
    candidates = []
    for path in entries:
        if path.is_dir():
            warnings.warn(f"VideoFolder: {path} is a directory, not a video file; ignoring it", stacklevel=2)
            continue
        if path.is_symlink() and not path.exists():
            try:
                path.stat()  # raises: why the link cannot be followed (missing target, a loop)
            except OSError as error:
                problems[path] = f"{path}: link to {path.readlink()} cannot be followed ({error.strerror})"
        elif not path.is_file():
            problems[path] = f"{path}: not a regular file"
        candidates.append(path)
    readable = []
    unreadable = Unreadable(root, len(candidates), max_bad_fraction)
    for path in candidates:
        try:
            if path in problems:
                raise DataError(problems[path])
            readable.append(probe_video(path))
        except DataError as error:
            unreadable.add(path, str(error), check=False)
    if not readable:
        found = sum(1 for p in root.rglob("*") if p.is_file())
        raise DataError(
            f"VideoFolder: no readable video in {root} ({found} files, {len(candidates)} with a video extension "
            f"{'/'.join(e.lstrip('.') for e in extensions)})"
        )
    unreadable.check()
    return readable, unreadable


def assign_buckets(videos: list[VideoInfo], buckets: list[tuple[int, int, int]], fps: float | None,
                   max_crop: float) -> tuple[dict[str, int], dict[str, str]]:
    """Send each video to the bucket nearest its own shape: among the buckets it has frames enough for
    (T <= its frames at `fps`, default its own rate), the one whose aspect needs the least cropping, then
    the longest. Frames are never distorted: they are scaled to cover the bucket and centre-cropped, and a
    file whose best bucket would crop more than `max_crop` of its width or height fits no bucket.
    Returns ({path: its bucket's index}, {path: why it fits no bucket})."""
    placed, unfit = {}, {}
    for info in videos:
        frames = max(1, int(info.duration * (fps or info.fps) + 1e-3))
        aspect = info.width / info.height
        fitting = [(_crop(aspect, w / h), -t, b) for b, (t, h, w) in enumerate(buckets) if t <= frames]
        crop, _, best = min(fitting, default=(None, 0, None))
        if best is None or crop > max_crop + 1e-9:
            why = (f"needs a bucket of at most {frames} frames" if best is None
                   else f"its nearest bucket {buckets[best]} would crop {crop:.0%} (max_crop={max_crop:g})")
            unfit[str(info.path)] = f"{info.path} ({info.width}x{info.height}, {frames} frames): {why}"
        else:
            placed[str(info.path)] = best
    return placed, unfit


def _crop(aspect: float, bucket_aspect: float) -> float:
    """The fraction of the width or height that covering a bucket of `bucket_aspect` cuts off."""
    return 1 - min(aspect, bucket_aspect) / max(aspect, bucket_aspect)


class VideoClips(Dataset):
    """Clips from `videos` (`VideoFolder.clips` builds one for a split).

    Items are an index, or (index, (T, H, W)) from a bucket sampler (then the clip has that shape).
    A training clip (`random_start`) starts at a point that is a pure function of (`seed`, epoch, index),
    so a resumed run reads the same clips: the epoch is 0 until `set_epoch(epoch)` is called (a sampler or
    the loop calls it before each epoch; DataLoader workers see it when they start, so with persistent
    workers pass it before the first epoch or restart the workers). Otherwise a clip is the middle of its
    video. A file that fails to decode (or whose caption cannot be read) is recorded in `unreadable`
    (shared by a folder's splits) and the sample is replaced by the next readable index (wrapping around);
    such an item carries ``skipped`` ({path: reason}) for the main process
    (`VideoFolder.on_after_batch_transfer`).
    """

    def __init__(self, videos: list[VideoInfo], root: Path, classes: list[str], frames: int,
                 size: tuple[int, int], fps: float | None, random_start: bool, seed: int = 0,
                 unreadable: Unreadable | None = None):
        self.videos, self.root, self.classes = videos, root, classes
        self.frames, self.size, self.fps, self.random_start = frames, tuple(size), fps, random_start
        self.seed, self.epoch = seed, 0
        self.unreadable = unreadable if unreadable is not None else Unreadable(root, len(videos))

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose clip starts `__getitem__` returns (training clips only)."""
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, tuple[int, int, int]]) -> dict:
        index, (frames, height, width) = key if isinstance(key, tuple) else (key, (self.frames, *self.size))
        skipped: dict[str, str] = {}
        for offset in range(len(self.videos)):
            info = self.videos[(index + offset) % len(self.videos)]
            if str(info.path) in self.unreadable.files:
                continue
            span = max(0.0, info.duration - frames / (self.fps or info.fps))
            unit = _stable_fraction(f"{self.seed}/{self.epoch}/{index}") if self.random_start else 0.5
            caption_file = info.path.with_suffix(".txt")
            relative = info.path.relative_to(self.root)
            try:
                video = read_clip(info.path, frames, (height, width), unit * span, self.fps)
                try:
                    caption = caption_file.read_text().strip() if caption_file.exists() else ""
                except (OSError, UnicodeDecodeError) as error:
                    raise DataError(f"{info.path}: its caption {caption_file.name} cannot be read "
                                    f"({type(error).__name__}: {error})") from None
            except DataError as error:
                skipped[str(info.path)] = str(error)
                self.unreadable.add(info.path, str(error))
                continue
            item = {
                "video": video,
                "caption": caption,
                "labels": {"label": self.classes.index(relative.parts[0]) if len(relative.parts) > 1 else -1},
                "index": index,
            }
            if skipped:
                item["skipped"] = skipped
            return item
        raise DataError(f"VideoFolder: no readable video left in {self.root} ({len(self.unreadable.files)} "
                        f"unreadable)")


def collate(items: list[dict]) -> dict:
    """Stack videos and labels; keep captions as a list; merge the items' ``skipped`` files, if any."""
    batch = {
        "video": torch.stack([item["video"] for item in items]),
        "caption": [item["caption"] for item in items],
        "labels": {"label": torch.tensor([item["labels"]["label"] for item in items])},
        "index": torch.tensor([item["index"] for item in items]),
    }
    skipped = {path: reason for item in items for path, reason in item.get("skipped", {}).items()}
    if skipped:
        batch["skipped"] = skipped
    return batch


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
        seed: training clips start at a point that is a pure function of (seed, epoch, index); the loader
            hands each split its epoch (`VideoClips.set_epoch`).
        max_bad_fraction: the run fails (a one-line DataError naming the folder, the count and the fraction)
            only when more than this fraction of the folder's video files turns out unreadable, at setup or
            while training; fewer are skipped, each named once in a warning, and summed up at teardown.
        buckets: (T, H, W) shapes instead of one `frames` x `size`: every file goes to the bucket nearest its
            aspect and length (`assign_buckets`: scaled to cover, centre-cropped, never stretched), images
            are 1-frame videos, and every batch holds one bucket.
        max_crop: with buckets, a file whose nearest bucket would crop more than this fraction of its width or
            height is skipped (named in a warning); a folder where no file fits is an error.
    """

    def __init__(self, root: str, frames: int = 16, size: tuple[int, int] = (64, 64), fps: float | None = None,
                 batch_size: int = 8, val_fraction: float = 0.1, num_workers: int = 0, seed: int = 0,
                 max_bad_fraction: float = 0.1, buckets: list[tuple[int, int, int]] | None = None,
                 max_crop: float = 0.5):
        super().__init__()
        require_size2("VideoFolder", size)
        require_positive("VideoFolder", frames=frames, batch_size=batch_size)
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"VideoFolder: val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise DataError(f"VideoFolder: max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.root, self.frames, self.size, self.fps = Path(root), frames, tuple(size), fps
        self.batch_size, self.val_fraction, self.num_workers = batch_size, val_fraction, num_workers
        self.seed, self.max_bad_fraction = seed, max_bad_fraction
        if not 0.0 <= max_crop < 1.0:
            raise DataError(f"VideoFolder: max_crop must be in [0, 1), got {max_crop}")
        self.bucketed = buckets is not None
        self.buckets = parse_buckets(buckets, None, "VideoFolder")[0] if self.bucketed else [(frames, *self.size)]
        self.max_crop = max_crop
        self.assignments: dict[str, list[int]] = {}
        self.splits: dict[str, VideoClips] = {}
        self.unreadable: Unreadable | None = None

    @property
    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        extensions = VIDEO_EXTENSIONS + (IMAGE_EXTENSIONS if self.bucketed else ())
        videos, self.unreadable = scan_folder(self.root, extensions, self.max_bad_fraction)
        if self.bucketed:
            placed = self._place(videos)
            videos = [v for v in videos if str(v.path) in placed]
        held_out = [v for v in videos if _stable_fraction(v.path.relative_to(self.root)) < self.val_fraction]
        train = [v for v in videos if v not in held_out] or videos
        self.splits = {"train": self.clips(train, random_start=True), "val": self.clips(held_out or videos),
                       "all": self.clips(videos)}
        if self.bucketed:
            self.assignments = {split: [placed[str(v.path)] for v in dataset.videos]
                                for split, dataset in self.splits.items()}

    def _place(self, videos: list[VideoInfo]) -> dict[str, int]:
        """{path: bucket} of the videos that fit a bucket; each other one is named in a warning, and none
        fitting is an error."""
        placed, unfit = assign_buckets(videos, self.buckets, self.fps, self.max_crop)
        for reason in unfit.values():
            warnings.warn(f"VideoFolder: skipping {reason}", stacklevel=3)
        if not placed:
            raise DataError(f"VideoFolder: no file in {self.root} fits a bucket (buckets {self.buckets}, max_crop="
                            f"{self.max_crop:g}); first: {next(iter(unfit.values()))}")
        return placed

    def clips(self, videos: list[VideoInfo], random_start: bool = False) -> VideoClips:
        """A dataset of clips from `videos` with this folder's frames, size, fps and classes (each clip from a
        seeded start, or from the middle of its video); unreadable files are recorded for the whole folder."""
        return VideoClips(videos, self.root, self.classes, self.frames, self.size, self.fps, random_start,
                          self.seed, self.unreadable)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """In the main process: take the files a batch's items skipped (found unreadable, maybe in a worker)
        into the folder's record, so each is named once and too many unreadable files stop the run. (After
        the transfer: WorldModel overrides `on_before_batch_transfer`, which then replaces this class's.)"""
        for path, reason in batch.pop("skipped", {}).items():
            if self.unreadable is not None:
                self.unreadable.add(path, reason)
        return batch

    def teardown(self, stage: str | None = None) -> None:
        """At the end of fit/validate/test/predict: say how many files were skipped as unreadable."""
        if self.unreadable is not None and self.unreadable.files:
            warnings.warn(self.unreadable.summary(), stacklevel=2)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # seeded order, split between DDP ranks, resumable mid-epoch (the same sampler as SyntheticWorld's)
        buckets = {"shapes": self.buckets, "assignment": self.assignments[split]} if self.bucketed else {}
        sampler = BucketBatchSampler(len(self.splits[split]), self.batch_size, shuffle=shuffle, seed=self.seed, **buckets)
        return ResumableDataLoader(self.splits[split], batch_sampler=sampler, collate_fn=collate,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("all", False)


def _stable_fraction(key: Path | str) -> float:
    """A number in [0, 1) that depends only on `key` (a path, or e.g. "seed/epoch/index")."""
    return int(hashlib.sha1(str(key).encode()).hexdigest()[:8], 16) / 2**32
