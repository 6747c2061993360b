"""Every video read and write, through PyAV. Writes are atomic: a temp file renamed into place."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from ..errors import DataError, PatchworldError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only if the block succeeds. The file gets
    the mode a plain ``open`` would give it (0666 minus the umask). A folder that cannot be made or written,
    or a full disk, is a one-line PatchworldError naming `path`; nothing partial is left."""
    path = Path(path)
    tmp = _temp_file(path)
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):  # some filesystems (FAT, network mounts) refuse chmod
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                           errno.EISDIR):
            raise PatchworldError(f"cannot write {path}: {error.strerror}") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path: str | Path) -> Path:
    """Fail now, not at the end of a long run, if a file cannot be written at `path`: a one-line
    PatchworldError naming it. Makes a temporary file there and removes it (and any folder it had to make)."""
    path = Path(path)
    if path.is_dir():
        raise PatchworldError(f"cannot write {path}: it is a directory; give the path of the file to write")
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]  # deepest first
    try:
        os.unlink(_temp_file(path))
    finally:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def _temp_file(path: Path) -> str:
    """An empty temporary file beside `path` (its folder made if needed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as error:
        blocker = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else error.strerror or error
        raise PatchworldError(f"cannot write {path}: {reason}") from None
    os.close(fd)
    return tmp


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def write_video(path: str | Path, video: torch.Tensor, fps: int = 8, crf: int = 18) -> Path:
    """Write (3, T, H, W) in [-1, 1] as H.264 mp4 (yuv420p; odd sizes are padded to even)."""
    frames = to_uint8_frames(video)
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
            stream.width, stream.height, stream.pix_fmt = width + pad_w, height + pad_h, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
    return Path(path)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float  # seconds
    fps: float
    width: int
    height: int


def probe_video(path: str | Path) -> VideoInfo:
    """Open a file and decode its first frame; a DataError names the file if that fails."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise DataError(f"{path}: no decodable frame")
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = (stream.frames or 1) / fps
            return VideoInfo(path, duration, fps, first.width, first.height)
    except DataError:
        raise
    except Exception as error:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise DataError(f"{path}: cannot decode video ({type(error).__name__}: {error})") from None


def read_clip(
    path: str | Path, frames: int | None, size: tuple[int, int], start: float = 0.0, fps: float | None = None,
    pad: bool = True,
) -> torch.Tensor:
    """Read `frames` frames (None: every one to the end) from `start` seconds at `fps` (default: the file's),
    resized to cover `size` (H, W) and centre-cropped. Short videos repeat their last frame, unless `pad` is
    False (or `frames` None): then they give the frames they have. Returns (3, T, H, W) in [-1, 1]."""
    height, width = size
    wanted = float("inf") if frames is None else frames
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            step = 1.0 / (fps or float(stream.average_rate or 25))
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            picked: list[np.ndarray] = []
            for frame in container.decode(stream):
                time = float(frame.pts * stream.time_base) if frame.pts is not None else len(picked) * step
                while len(picked) < wanted and time + 1e-6 >= start + len(picked) * step - step / 2:
                    picked.append(_cover_crop(frame, height, width))
                if len(picked) == wanted:
                    break
    except Exception as error:
        raise DataError(f"{path}: cannot decode video ({type(error).__name__}: {error})") from None
    if not picked:
        raise DataError(f"{path}: no frame at or after {start:.2f}s")
    if pad and frames is not None:
        picked += [picked[-1]] * (frames - len(picked))
    clip = torch.from_numpy(np.stack(picked)).permute(3, 0, 1, 2).float()  # (3, T, H, W)
    return clip / 127.5 - 1


def _cover_crop(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the frame covers (height, width), then centre-crop."""
    scale = max(height / frame.height, width / frame.width)
    scaled_h, scaled_w = max(height, round(frame.height * scale)), max(width, round(frame.width * scale))
    # one swscale thread: a threaded scaler used before a DataLoader forks its workers deadlocks them (PyAV 18.1.1
    # threads by default), and workers are already one per core
    array = frame.to_ndarray(format="rgb24", width=scaled_w, height=scaled_h, threads=1)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return array[top : top + height, left : left + width]


__all__ = ["atomic_path", "check_writable", "write_video", "probe_video", "read_clip", "VideoInfo", "to_uint8_frames"]
