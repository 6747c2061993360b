"""Decoders that write what `predict` produces: `VideoWriter` (mp4 + PNG strip) and `EmbeddingWriter`
(safetensors features + a PNG of the input frames above a picture of the features)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from patchworld import ComponentError, Decoder
from patchworld.data.video_io import atomic_path, to_uint8_frames, write_video
from patchworld.errors import require_positive


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



def no_fewer_than_zero(strip_frames: int, owner: str) -> int:
    if strip_frames < 0:
        raise ComponentError(f"{owner}.strip_frames must be >= 0 (0 writes no strips), got {strip_frames}")
    return strip_frames

class VideoWriter(Decoder):
    """Writes every video-shaped output (B, 3, T, H, W) in [-1, 1] as H.264 mp4 (<name>_<key>.mp4) and a
    PNG frame strip (<name>_<key>.png).

    Args:
        fps: frames per second of the written files.
        strip_frames: at most this many (evenly spaced) frames in each PNG strip; 0 writes no strips.
    """

    def __init__(self, fps: int = 8, strip_frames: int = 16):
        super().__init__()
        require_positive("VideoWriter", fps=fps)
        self.fps, self.strip_frames = fps, no_fewer_than_zero(strip_frames, "VideoWriter")

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
    """Writes per-video features as safetensors (<name>.safetensors: tokens (N, D), positions (N, 3), pooled
    (D,) mean over tokens) and, when the batch has its input video, a PNG to look at (<name>.png): the input
    frames on top and, below each, the features at that time: the first 3 principal components of the
    clip's tokens as RGB on the token grid, upsampled to the frame size.

    Args:
        strip_frames: at most this many (evenly spaced) frames in each PNG; 0 writes no PNGs.
    """

    def __init__(self, strip_frames: int = 16):
        super().__init__()
        self.strip_frames = no_fewer_than_zero(strip_frames, "EmbeddingWriter")

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        tokens, positions = outputs["tokens"].float().cpu(), outputs["positions"].cpu()
        videos = batch.get("video") if self.strip_frames else None
        written = []
        for k, (name, sample_tokens, sample_positions) in enumerate(
                zip(_names(batch, batch_index, len(tokens)), tokens, positions)):
            path = directory / f"{name}.safetensors"
            tensors = {"tokens": sample_tokens.contiguous(), "positions": sample_positions.contiguous(),
                       "pooled": sample_tokens.mean(0)}
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp))
            written.append(path)
            if videos is not None:
                video = videos[k].detach().float().cpu()  # (3, T, H, W)
                features = feature_video(sample_tokens, sample_positions, video.shape[1:])  # (3, T, H, W)
                written.append(write_frame_strip(directory / f"{name}.png", torch.cat([video, features], dim=2),
                                                 self.strip_frames))
        return written


def feature_video(tokens: torch.Tensor, positions: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """A picture of one clip's features: tokens (N, D) at integer positions (N, 3) = (t, h, w) -> (3, T, H, W)
    in [-1, 1] for a video of `shape` (T, H, W). Each token's first 3 principal components (each scaled
    to [-1, 1] over the clip) are its RGB colour on the token grid, upsampled (nearest) to the frame size;
    frame f shows token time step f * t_grid // T."""
    T, H, W = shape
    centred = tokens.float() - tokens.float().mean(0)  # (N, D)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)  # (min(N, D), D)
    rgb = torch.zeros(len(tokens), 3)
    rgb[:, : min(3, len(components))] = centred @ components[:3].T  # (N, <=3)
    low, high = rgb.amin(0), rgb.amax(0)
    rgb = (rgb - low) / (high - low).clamp_min(1e-8) * 2 - 1  # (N, 3) in [-1, 1]
    t, h, w = positions.long().unbind(-1)  # (N,) each
    grid = torch.full((3, int(t.max()) + 1, int(h.max()) + 1, int(w.max()) + 1), -1.0)  # (3, t, h, w)
    grid[:, t, h, w] = rgb.T
    grid = torch.nn.functional.interpolate(grid.permute(1, 0, 2, 3), size=(H, W), mode="nearest")  # (t, 3, H, W)
    steps = torch.arange(T) * grid.shape[0] // T  # (T,) token time step of each frame
    return grid[steps].permute(1, 0, 2, 3)  # (3, T, H, W)
