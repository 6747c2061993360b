"""The clips of a comparison: what every model trains on (`training_data`, a recipe's ``data`` entry) and
the probe splits every model is read on (`ProbeClips`), from SyntheticWorld or a folder of your own
labelled videos (`DataSpec`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.synthetic import collate
from ..errors import DataError


@dataclass
class DataSpec:
    """The clips every model trains on and is probed on (SyntheticWorld), or your own labelled videos.

    frames / size: clip shape; a model that cannot take `frames` frames (e.g. a causal VAE needs 1 + 2k)
        gets the longest prefix it can.
    batch_size: training batch size for every model.
    probe_train / probe_val / probe_test: clips of each probe split (SyntheticWorld's train/val/test splits
        with `probe_seed`, disjoint from the training clips).
    object_scale: SyntheticWorld's object size factor, the same for every model (a recipe's own is overridden).
    friction: SyntheticWorld's friction (velocity lost per frame; > 0 makes `reversed` identifiable).
    folder: a VideoFolder root with one sub-folder per class: models train on its training files and the
        probes predict the sub-folder label (task "label"); its held-out files are split in two for
        validation and test (physics then needs `physics.folder`: matched sets of your own).
    """

    frames: int = 8
    size: tuple[int, int] = (32, 32)
    batch_size: int = 16
    max_objects: int = 3
    gravity_prob: float = 0.3
    reverse_prob: float = 0.5
    object_scale: float = 1.0
    friction: float = 0.0
    seed: int = 0
    probe_seed: int = 1
    probe_train: int = 256
    probe_val: int = 128
    probe_test: int = 256
    folder: str | None = None
    folder_val_fraction: float = 0.4


def training_data(d: DataSpec, frames: int) -> dict:
    """The datamodule every model trains on, as a recipe's ``data`` entry."""
    if d.folder:
        return {"class_path": "VideoFolder", "init_args": {
            "root": d.folder, "frames": frames, "size": list(d.size), "batch_size": d.batch_size,
            "val_fraction": d.folder_val_fraction}}
    return {"class_path": "SyntheticWorld", "init_args": {
        "frames": frames, "size": list(d.size), "batch_size": d.batch_size, "max_objects": d.max_objects,
        "gravity_prob": d.gravity_prob, "reverse_prob": d.reverse_prob, "object_scale": d.object_scale,
        "friction": d.friction, "seed": d.seed, "val_size": 16,
        "test_size": 16, "train_size": 1_000_000}}


class ProbeClips:
    """The probe splits of a study as batches, rendered (or read) once and kept for every model."""

    def __init__(self, data: DataSpec, batch_size: int):
        self.data, self.batch_size = data, batch_size
        self._clips: dict[str, list[dict]] = {}

    def __call__(self, split: str) -> list[dict]:
        """Batches of the probe split ("train", "val" or "test"), rendered once and kept."""
        if split not in self._clips:
            d = self.data
            if d.folder:
                self._clips = self.folder_probe_clips()
            else:
                from ..data.synthetic import SyntheticWorld

                world = SyntheticWorld(frames=d.frames, size=tuple(d.size), batch_size=self.batch_size,
                                       train_size=d.probe_train, val_size=d.probe_val, test_size=d.probe_test,
                                       max_objects=d.max_objects, gravity_prob=d.gravity_prob,
                                       reverse_prob=d.reverse_prob, object_scale=d.object_scale, friction=d.friction,
                                       seed=d.probe_seed)
                for name in ("train", "val", "test"):
                    loader = torch.utils.data.DataLoader(world.splits[name], batch_size=self.batch_size,
                                                         collate_fn=collate)
                    self._clips[name] = list(loader)
        return self._clips[split]

    def folder_probe_clips(self) -> dict[str, list[dict]]:
        """Probe splits from a VideoFolder: its training files, and its held-out files alternately to
        validation and test (so the sweep is never selected on the clips it is scored on); every clip
        starts in the middle of its video, so every model sees the same clips."""
        from torch.utils.data import DataLoader

        from ..data.video_folder import VideoFolder, collate as folder_collate

        d = self.data
        folder = VideoFolder(d.folder, frames=d.frames, size=tuple(d.size), val_fraction=d.folder_val_fraction)
        folder.setup("fit")
        train, held = folder.splits["train"].videos, folder.splits["val"].videos
        if len(held) < 2 or {v.path for v in train} & {v.path for v in held}:
            raise DataError(f"compare: {d.folder} has {len(train) + len(held)} readable videos, too few to hold out "
                            f"separate validation and test files at folder_val_fraction={d.folder_val_fraction}; "
                            "add videos or raise data.folder_val_fraction")
        splits = {"train": train, "val": held[0::2], "test": held[1::2]}
        return {name: list(DataLoader(folder.clips(videos), batch_size=self.batch_size, collate_fn=folder_collate))
                for name, videos in splits.items()}
