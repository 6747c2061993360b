"""`Prompts`: the datamodule that feeds `predict` for generation: prompts from the command line or a text
file, and optional conditioning images/videos for the image-to-video, extension and interpolation tasks.

    patchworld predict --config recipes/sora-tiny.yaml --ckpt_path CKPT \\
        --data Prompts --data.prompts '["a large red circle moves to the right slowly"]'
    patchworld predict ... --data Prompts --data.prompt_file prompts.txt --data.task i2v --data.condition [first.png]

Conditioning files of another size are resized to cover the clip size and centre-cropped (as VideoFolder
does), with a message saying so.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from patchworld import DataError
from patchworld.data.video_io import probe_video, read_clip

from .generation import TASKS, check_frame_indices, given_mask, task_frames


def read_prompts(prompts: list[str] | None, prompt_file: str | None) -> list[str]:
    """Prompts from the list and/or a file (one per line; blank lines and lines starting with # skipped)."""
    found = [(f"prompt {i}", p) for i, p in enumerate(prompts or [])]
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise DataError(f"prompt_file {str(path)!r} does not exist")
        lines = [line.strip() for line in path.read_text().splitlines()]
        found += [(f"{path} line {n + 1}", line) for n, line in enumerate(lines) if line and not line.startswith("#")]
    if not found:
        raise DataError("no prompts: give --data.prompts '[\"a red circle moves to the right\"]' or --data.prompt_file FILE")
    for where, text in found:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where} is empty: every prompt needs some text")
    return [text.strip() for _, text in found]


def read_conditioning(paths: list[str], task: str, frames: int, size: tuple[int, int], context_frames: int,
                      given_frames: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the conditioning clip (3, T, H, W) and its given-frame mask (T,) from files."""
    height, width = size
    video = torch.zeros(3, frames, height, width)
    if task == "t2v" and given_frames is None:
        if paths:
            raise DataError(f"task 't2v' takes no condition files, got {paths}; use task i2v, extend_forward, "
                            "extend_backward or interpolate")
        return video, torch.zeros(frames, dtype=torch.bool)
    if not paths:
        raise DataError(f"task {task!r} needs --data.condition: an image or a video file")
    for path in paths:
        info = probe_video(path)  # a DataError naming the file if it cannot be decoded
        if (info.height, info.width) != (height, width):
            rank_zero_info(f"{path}: {info.width}x{info.height} resized to cover {width}x{height} and centre-cropped")
    if given_frames is not None:  # explicit pixel frames, taken from one video at the same indices
        indices = check_frame_indices(given_frames, frames, "given_frames")
        clip = read_clip(paths[0], frames, size)
        video[:, indices] = clip[:, indices]
    elif task == "interpolate" and len(paths) >= 2:  # first and last frame from two images
        indices = [0, frames - 1]
        video[:, 0] = read_clip(paths[0], 1, size)[:, 0]
        video[:, -1] = read_clip(paths[1], 1, size)[:, 0]
    else:
        indices = task_frames(task, frames, context_frames)
        clip = read_clip(paths[0], frames, size)  # (3, T, H, W); short files repeat their last frame
        if task == "extend_backward":  # the file's first frames close the generated clip
            video[:, indices] = clip[:, : len(indices)]
        elif task == "interpolate":
            video[:, indices] = clip[:, [0, -1]]
        else:
            video[:, indices] = clip[:, : len(indices)]
    return video, given_mask(indices, frames)[0]


class PromptDataset(Dataset):
    def __init__(self, prompts: list[str], video: torch.Tensor, given: torch.Tensor):
        self.prompts, self.video, self.given = prompts, video, given

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> dict:
        return {"caption": self.prompts[index], "video": self.video, "given": self.given, "index": index}


def collate(items: list[dict]) -> dict:
    return {
        "caption": [item["caption"] for item in items],
        "video": torch.stack([item["video"] for item in items]),  # (B, 3, T, H, W): zeros where not given
        "given": torch.stack([item["given"] for item in items]),  # (B, T) bool
        "index": torch.tensor([item["index"] for item in items]),
    }


class Prompts(pl.LightningDataModule):
    """Predict-only datamodule for generation: prompts (+ conditioning files) -> batches.

    Args:
        prompts: prompts given on the command line.
        prompt_file: a text file with one prompt per line (blank and # lines skipped).
        frames: frames of each generated clip.
        size: (H, W) of each generated clip.
        task: t2v, i2v, extend_forward, extend_backward or interpolate.
        condition: image/video files: i2v uses the first frame of the first file; the extend tasks its
            first `context_frames` frames; interpolate the first frames of two images, or the first and
            last frames of one video.
        context_frames: frames given by the extend tasks.
        given_frames: explicit pixel-frame indices to keep from the first condition file (any task).
        batch_size: clips generated together.
    """

    def __init__(self, prompts: list[str] | None = None, prompt_file: str | None = None, frames: int = 16,
                 size: tuple[int, int] = (64, 64), task: str = "t2v", condition: list[str] | None = None,
                 context_frames: int = 4, given_frames: list[int] | None = None, batch_size: int = 4):
        super().__init__()
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        self.prompts, self.prompt_file, self.frames, self.size = prompts, prompt_file, frames, tuple(size)
        self.task, self.condition, self.context_frames = task, list(condition or []), context_frames
        self.given_frames, self.batch_size = given_frames, batch_size

    def predict_dataloader(self) -> DataLoader:
        prompts = read_prompts(self.prompts, self.prompt_file)
        video, given = read_conditioning(self.condition, self.task, self.frames, self.size, self.context_frames,
                                         self.given_frames)
        return DataLoader(PromptDataset(prompts, video, given), batch_size=self.batch_size, collate_fn=collate)
