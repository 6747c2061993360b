"""`Prompts`: the datamodule that feeds `predict` for generation: prompts from the command line or a text
file, and optional conditioning images/videos, for every task of `TASKS` (plugins/generation.py):

    patchworld predict --config recipes/sora-tiny.yaml --ckpt_path CKPT \\
        --data Prompts --data.prompts '["a large red circle moves to the right slowly"]'
    patchworld predict ... --data Prompts --data.prompt_file prompts.txt --data.task i2v --data.condition [first.png]
    patchworld predict ... --data.task loop --data.context_frames 2                  # a seamless loop
    patchworld predict ... --data.task connect --data.condition '[a.mp4, b.mp4]'     # from a's end to b's start
    patchworld predict ... --data.task edit --data.strength 0.6 --data.condition [source.mp4]   # SDEdit
    patchworld predict ... --data.frames 32 --data.overlap 2                          # window by window
    patchworld predict ... --data.size [32,32] --data.refine_from preview.mp4         # preview -> refine

Conditioning files of another size are resized to cover the clip size and centre-cropped (as VideoFolder
does), with a message saying so; a file with fewer frames than its task takes from it is a `DataError`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from patchworld import DataError
from patchworld.data.video_io import probe_video, read_clip
from patchworld.errors import require_positive, require_size2
from patchworld.interfaces import PromptExpander

from .generation import TASKS, check_frame_indices, check_strength, context_of, given_mask, task_frames

# Refining a preview is an edit with its own prompt, from noise level 0.3: the preview's layout (the
# subject's place and colour, decided at high noise) is kept (measured: 20.9 dB and 0.29 px from the preview,
# against 21.7 dB and 0.26 px for the plain upsampling), the fine scale is re-drawn at the new size, and it
# costs 0.3 of the steps from noise; 0.5 keeps the layout a little less and saves much less time
# (docs/generation.md, "Preview, then refine", has the sweep behind this choice).
REFINE_STRENGTH = 0.3


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


def read_frames(path: str, indices: list[int], size: tuple[int, int], task: str) -> torch.Tensor:
    """Frames `indices` (negative: from the end) of a file, (3, len(indices), H, W); a file with too few
    frames for them is a DataError."""
    needed = max(i + 1 if i >= 0 else -i for i in indices)
    clip = read_clip(path, None if min(indices) < 0 else needed, size, pad=False)  # (3, F, H, W), F <= needed
    if clip.shape[1] < needed:
        raise DataError(f"{path} has {clip.shape[1]} frame{'s' * (clip.shape[1] != 1)}, too few for task {task!r}: "
                        f"it takes {needed} (give a video of at least {needed} frames, or fewer --data.frames / "
                        f"--data.context_frames)")
    return clip[:, indices]


def read_conditioning(paths: list[str], task: str, frames: int, size: tuple[int, int], context_frames: int | None,
                      given_frames: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the conditioning clip (3, T, H, W) and its given-frame mask (T,) from files: the task's given
    frames filled from the files as its `take` says, or for an edit the whole clip (the video to edit)."""
    height, width = size
    context_frames = context_of(task, frames, context_frames)
    video = torch.zeros(3, frames, height, width)
    spec = TASKS[task]
    if given_frames is None and spec.files == (0,) and paths:
        raise DataError(f"task {task!r} takes no condition files, got {paths}; use task i2v, extend_forward, "
                        "extend_backward, interpolate, connect or edit")
    if given_frames is not None:  # explicit pixel frames, taken from one video at the same indices
        indices = check_frame_indices(given_frames, frames, "given_frames")
        picks = [indices] if indices else []
    else:
        indices = task_frames(task, frames, context_frames)
        picks = spec.take(frames, context_frames, len(paths))
    if picks and not paths:
        raise DataError(f"task {task!r} needs --data.condition: an image or a video file")
    if given_frames is None and len(paths) not in spec.files:
        raise DataError(f"task {task!r} takes {' or '.join(map(str, spec.files))} condition files, got "
                        f"{len(paths)}: {paths}")
    for path in paths[: len(picks)]:
        info = probe_video(path)  # a DataError naming the file if it cannot be decoded
        if (info.height, info.width) != (height, width):
            rank_zero_info(f"{path}: {info.width}x{info.height} resized to cover {width}x{height} and centre-cropped")
    if picks:
        content = torch.cat([read_frames(path, pick, size, task) for path, pick in zip(paths, picks)], dim=1)
        if spec.strength is not None and given_frames is None:  # an edit: the video to edit, nothing given
            video = content  # (3, T, H, W)
        else:
            video[:, indices] = content
    return video, given_mask(indices, frames)[0]


class PromptDataset(Dataset):
    def __init__(self, prompts: list[str], video: torch.Tensor, given: torch.Tensor):
        self.prompts, self.video, self.given = prompts, video, given

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> dict:
        return {"caption": self.prompts[index], "video": self.video, "given": self.given, "index": index}


def collate(items: list[dict], settings: dict | None = None) -> dict:
    """A batch of prompts, plus the settings every clip shares (task, strength, window, overlap)."""
    return {
        "caption": [item["caption"] for item in items],
        "video": torch.stack([item["video"] for item in items]),  # (B, 3, T, H, W): given frames (else 0) or the source
        "given": torch.stack([item["given"] for item in items]),  # (B, T) bool
        "index": torch.tensor([item["index"] for item in items]),
        **(settings or {}),
    }


class Prompts(pl.LightningDataModule):
    """Predict-only datamodule for generation: prompts (+ conditioning files) -> batches.

    Args:
        prompts: prompts given on the command line.
        prompt_file: a text file with one prompt per line (blank and # lines skipped).
        frames: frames of each generated clip; beyond the window the clip is made window by window.
        size: (H, W) of each generated clip.
        task: one of `TASKS`: t2v (text only); i2v (the first frame of the file); extend_forward /
            extend_backward (the file's first `context_frames` frames open / close the clip); interpolate
            (the first and last frames of one video, or the first of one file and the last of another);
            connect (two files: the last `context_frames` of the first open the clip, the first
            `context_frames` of the second close it); loop (no file: a seamless loop); edit (SDEdit: the
            file's first `frames` frames, noised to `strength`, re-drawn under the prompt).
        condition: the image/video files the task takes.
        context_frames: frames given by the extend, connect and loop tasks (default: 4, or fewer where the
            clip must keep some to generate: 3 for a loop or a connect on 8 frames).
        given_frames: explicit pixel-frame indices to keep from the first condition file (any task).
        strength: edit / refine: the noise level the source is taken to, in (0, 1]: small keeps more of it,
            1 samples from pure noise (default: the edit task's 0.6; `REFINE_STRENGTH`, 0.3, for refine_from).
        refine_from: a low-resolution preview (mp4) to refine at `size`: upsampled, then edited with the same
            prompt from `strength`.
        window: frames per window when `frames` is longer (default: the clip length the model trained on,
            recorded in its checkpoint).
        overlap: frames of the previous window each window continues from, 1 to window - 1 (default:
            half the window).
        batch_size: clips generated together.
        expander: rewrites the prompts into the captions' style first (e.g. ``StyleExpander``: "red circle
            going left" -> "a large red circle moves to the left slowly"); each rewrite is printed.
    """

    def __init__(self, prompts: list[str] | None = None, prompt_file: str | None = None, frames: int = 16,
                 size: tuple[int, int] = (64, 64), task: str = "t2v", condition: list[str] | None = None,
                 context_frames: int | None = None, given_frames: list[int] | None = None, strength: float | None = None,
                 refine_from: str | None = None, window: int | None = None, overlap: int | None = None,
                 batch_size: int = 4, expander: PromptExpander | None = None):
        super().__init__()
        require_size2("Prompts", size)
        require_positive("Prompts", frames=frames, batch_size=batch_size)
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        if refine_from is not None:  # a refine is an edit of the upsampled preview with the same prompt
            if task not in ("t2v", "edit") or condition:
                raise DataError(f"refine_from takes no --data.condition and no other task (got task {task!r}, "
                                f"condition {condition}): it edits the preview itself")
            task, condition, strength = "edit", [refine_from], REFINE_STRENGTH if strength is None else strength
        if strength is not None:
            if TASKS[task].strength is None:
                raise DataError(f"strength applies to task edit or --data.refine_from, not to task {task!r}")
            check_strength(strength)
        if window is not None and window < 2:
            raise DataError(f"window {window} is out of range: give at least 2 frames (windows overlap by 1 or more)")
        if overlap is not None and overlap < 1:
            raise DataError(f"overlap {overlap} is out of range: give 1 to window - 1 (the frames each window "
                            f"continues from)")
        if overlap is not None and window is not None and overlap >= window:
            raise DataError(f"overlap {overlap} is out of range for {window}-frame windows: give 1 to {window - 1}")
        self.prompts, self.prompt_file, self.frames, self.size = prompts, prompt_file, frames, tuple(size)
        self.task, self.condition, self.context_frames = task, list(condition or []), context_frames
        self.given_frames, self.batch_size, self.refine_from = given_frames, batch_size, refine_from
        self.expander = expander
        self.settings = {"task": task, "strength": strength if strength is not None else TASKS[task].strength,
                         "window": window, "overlap": overlap}

    def predict_dataloader(self) -> DataLoader:
        prompts = read_prompts(self.prompts, self.prompt_file)
        if self.expander is not None:
            expanded = self.expander.expand(prompts)
            if len(expanded) != len(prompts) or not all(isinstance(e, str) and e.strip() for e in expanded):
                raise DataError(f"prompt expander {type(self.expander).__name__} must return one non-empty caption "
                                f"per prompt: got {expanded!r} for {prompts!r}")
            for prompt, caption in zip(prompts, expanded):
                rank_zero_info(f"prompt {prompt!r} -> {caption!r}")
            prompts = expanded
        if self.refine_from is not None:
            try:
                probe_video(self.refine_from)
            except DataError as error:
                raise DataError(f"refine_from {self.refine_from!r} is not a video ({error}): give the mp4 of a "
                                f"preview made by predict") from None
        video, given = read_conditioning(self.condition, self.task, self.frames, self.size, self.context_frames,
                                         self.given_frames)
        return DataLoader(PromptDataset(prompts, video, given), batch_size=self.batch_size,
                          collate_fn=partial(collate, settings=self.settings))
