"""Decoders that write what `predict` produces: `VideoWriter` (mp4) and `EmbeddingWriter` (safetensors)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from patchworld import Decoder
from patchworld.data.video_io import atomic_path, to_uint8_frames, write_video


def _names(batch: dict, batch_index: int, count: int) -> list[str]:
    """One file stem per sample: the dataset index when the batch has one."""
    if "index" in batch:
        return [f"{int(i):06d}" for i in batch["index"]]
    return [f"{batch_index:04d}_{i:02d}" for i in range(count)]


def write_frame_strip(path: Path, video: torch.Tensor, max_frames: int = 16) -> Path:
    """Write (3, T, H, W) in [-1, 1] as one PNG: up to `max_frames` evenly spaced frames side by side."""
    from PIL import Image

    frames = to_uint8_frames(video)  # (T, H, W, 3)
    picks = torch.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().long().tolist()
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(tmp, format="PNG")
    return Path(path)


class VideoWriter(Decoder):
    """Writes every video-shaped output (B, 3, T, H, W) in [-1, 1] as H.264 mp4 (<name>_<key>.mp4) and a
    PNG frame strip (<name>_<key>.png).

    Args:
        fps: frames per second of the written files.
        strip_frames: at most this many (evenly spaced) frames in each PNG strip; 0 writes no strips.
    """

    def __init__(self, fps: int = 8, strip_frames: int = 16):
        super().__init__()
        self.fps, self.strip_frames = fps, strip_frames

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        written = []
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor) and value.dim() == 5 and value.shape[1] == 3:
                for name, video in zip(_names(batch, batch_index, len(value)), value):
                    written.append(write_video(directory / f"{name}_{key}.mp4", video, fps=self.fps))
                    if self.strip_frames:
                        written.append(write_frame_strip(directory / f"{name}_{key}.png", video, self.strip_frames))
        return written


class EmbeddingWriter(Decoder):
    """Writes per-video features as safetensors: tokens (N, D), positions (N, 3), pooled (D,) mean over tokens."""

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        tokens, positions = outputs["tokens"].float().cpu(), outputs["positions"].cpu()
        written = []
        for name, sample_tokens, sample_positions in zip(_names(batch, batch_index, len(tokens)), tokens, positions):
            path = directory / f"{name}.safetensors"
            tensors = {"tokens": sample_tokens.contiguous(), "positions": sample_positions.contiguous(),
                       "pooled": sample_tokens.mean(0)}
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp))
            written.append(path)
        return written
