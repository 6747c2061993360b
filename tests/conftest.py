"""Shared test fixtures: run the CLI in-process, make tiny mp4 files, build tiny world models."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp, as patchworld/__init__.py does

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run `patchworld ARGS...` in-process from a temporary working directory; returns the exit code."""
    from patchworld.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> int:
        try:
            return main([str(a) for a in args])
        except SystemExit as exit_:  # the argument parser exits on bad input
            return int(exit_.code or 0)

    return run


@pytest.fixture
def recipe_path():
    """Absolute path of a shipped recipe by name."""
    root = Path(__file__).resolve().parent.parent / "recipes"
    return lambda name: root / f"{name}.yaml"


def write_test_mp4(path: Path, frames: int = 12, height: int = 48, width: int = 64, fps: int = 8, seed: int = 0) -> Path:
    """A small H.264 mp4 of a bright square moving right over noise, written with PyAV."""
    from patchworld.data.video_io import write_video

    rng = np.random.default_rng(seed)
    video = torch.from_numpy(rng.uniform(-1, -0.5, (3, frames, height, width)).astype(np.float32))
    for t in range(frames):
        x = 2 + t * 3 % (width - 10)
        video[:, t, 10:20, x : x + 8] = 1.0
    return write_video(path, video, fps=fps)


@pytest.fixture
def make_mp4():
    return write_test_mp4


def write_corrupt_mp4(path: Path, frames: int = 24, keep: float = 0.35, height: int = 48, width: int = 64) -> Path:
    """An mp4 corrupted past its first frame: written with its index up front (movflags=faststart), then cut
    to `keep` of its bytes, so opening it and decoding frame 0 work but decoding every frame fails."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):  # noise: every frame is a large packet, so the cut lands inside one
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture
def make_corrupt_mp4():
    return write_corrupt_mp4


#: a one-block V-JEPA that trains in a study in seconds: a study model entry's `overrides` (YAML)
TINY_VJEPA_OVERRIDES = ('[--model.backbone.init_args.dim, "32", --model.backbone.init_args.depth, "1", '
                        '--model.backbone.init_args.heads, "2", --model.objective.init_args.predictor_dim, "16", '
                        '--model.objective.init_args.predictor_depth, "1", --model.objective.init_args.predictor_heads, '
                        '"2", --trainer.precision, 32-true]')

#: a tiny causal VAE (2x4x4 compression, 4 latent channels)
VAE_ARCH = {"compression": [2, 4, 4], "latent_channels": 4, "width": 8, "multipliers": [1, 2], "blocks": [0, 1]}


@pytest.fixture
def vae_checkpoint(tmp_path):
    """A (randomly initialised) VAE saved as a fit run's checkpoint would hold it, so recipes load it frozen."""
    torch.manual_seed(1)
    from patchworld_plugins.vae import VAE

    vae = VAE(**VAE_ARCH)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"tokenizer.{key}": value for key, value in vae.state_dict().items()}}, path)
    return str(path)
