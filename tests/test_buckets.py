"""Buckets: every batch one (T, H, W), drawn by weight (SyntheticWorld renders it natively) or given by the
file (VideoFolder sends each file to the bucket nearest its aspect and length, never stretched); the same
bucket on every DDP rank, exact resume, per-bucket adherence, and the bad-input lines."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from patchworld.data.sampler import BucketBatchSampler
from patchworld.data.synthetic import SyntheticWorld
from patchworld.data.video_folder import VideoFolder
from patchworld.data.video_io import write_video
from patchworld.errors import ComponentError, DataError
from test_resume import differences, load

BUCKETS = [[5, 16, 16], [5, 16, 32], [5, 32, 16], [1, 16, 16]]


def test_drawn_buckets_follow_their_weights_and_agree_across_ranks():
    shapes = [(5, 8, 8), (1, 8, 16), (9, 16, 8)]
    one = BucketBatchSampler(4000, 4, shapes, shuffle=True, seed=2, world_size=1, weights=[6, 3, 1])
    drawn = Counter(shape for _, shape in one.global_batches(0))
    assert [round(drawn[s] / len(one), 1) for s in shapes] == [0.6, 0.3, 0.1]
    ranks = [BucketBatchSampler(4000, 2, shapes, shuffle=True, seed=2, rank=r, world_size=2, weights=[6, 3, 1])
             for r in (0, 1)]
    for whole, first, second in zip(one, *ranks):  # each global batch: one shape, split between the ranks
        assert whole == first + second and len({shape for _, shape in whole}) == 1


def test_assigned_buckets_keep_each_index_in_its_own_bucket_once_per_epoch():
    assignment = [0, 1, 1, 2, 0, 1, 2, 2, 2, 0, 1]
    shapes = [(1, 8, 8), (5, 8, 16), (5, 16, 8)]
    sampler = BucketBatchSampler(len(assignment), 2, shapes, shuffle=True, seed=4, world_size=1, assignment=assignment)
    sampler.set_epoch(3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 2 + 2
    assert sorted(i for batch in batches for i, _ in batch) == list(range(len(assignment)))
    for batch in batches:
        assert {shape for _, shape in batch} == {shapes[assignment[batch[0][0]]]}
        assert {assignment[i] for i, _ in batch} == {assignment[batch[0][0]]}
    sampler.set_epoch(4)
    assert list(sampler) != batches  # another epoch, another order
    ranks = [BucketBatchSampler(len(assignment), 1, shapes, shuffle=True, seed=4, rank=r, world_size=2,
                                assignment=assignment) for r in (0, 1)]
    for rank in ranks:
        rank.set_epoch(3)
    pairs = list(zip(*ranks))
    assert len(pairs) == len(ranks[0]) == len(ranks[1])  # topped up per bucket: equal counts on both ranks
    assert all(a[0][1] == b[0][1] for a, b in pairs)  # the same bucket on both ranks at every step


def test_synthetic_world_renders_each_bucket_natively():
    data = SyntheticWorld(buckets=BUCKETS, bucket_weights=[1, 1, 1, 3], batch_size=3, train_size=60, max_objects=1)
    seen = Counter()
    for batch in data.train_dataloader():
        shape = tuple(batch["video"].shape[2:])
        seen[shape] += 1
        assert list(shape) in BUCKETS
    assert set(seen) == {tuple(b) for b in BUCKETS} and seen[(1, 16, 16)] == max(seen.values())
    wide = data.splits["train"][(0, (5, 16, 32))]["video"]
    assert wide.shape == (3, 5, 16, 32)
    with pytest.raises(ComponentError, match="bucket_weights: one positive weight per bucket"):
        SyntheticWorld(buckets=BUCKETS, bucket_weights=[1, 2])
    with pytest.raises(ComponentError, match=r"buckets: each bucket is three ints"):
        SyntheticWorld(buckets=[[5, 16]])


def disc_video(path, height: int, width: int, frames: int = 12):
    """A bright disc (radius 0.3 of the shorter side) in the middle of a dark frame."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    disc = (((y - height / 2) ** 2 + (x - width / 2) ** 2).sqrt() < 0.3 * min(height, width)).float()
    return write_video(path, (disc * 1.8 - 0.9).expand(3, frames, height, width).contiguous(), fps=8)


def disc_extent(clip: torch.Tensor) -> tuple[float, float]:
    """(height, width) in pixels of the bright disc in frame 0 of a (3, T, H, W) clip."""
    mask = clip[:, 0].mean(0) > 0
    return float(mask.any(1).sum()), float(mask.any(0).sum())


def test_video_folder_sends_files_to_the_nearest_bucket_without_distortion(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    disc_video(root / "wide.mp4", 48, 96)
    disc_video(root / "tall.mp4", 96, 48)
    disc_video(root / "square.mp4", 64, 64)
    disc_video(root / "short.mp4", 64, 64, frames=2)  # too short for 5 frames: a 1-frame bucket
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(root / "still.png")  # an image: 1 frame
    data = VideoFolder(str(root), buckets=BUCKETS, batch_size=2, val_fraction=0.0)
    data.setup()
    split = data.splits["all"]
    placed = {info.path.name: data.buckets[b] for info, b in zip(split.videos, data.assignments["all"])}
    assert placed == {"wide.mp4": (5, 16, 32), "tall.mp4": (5, 32, 16), "square.mp4": (5, 16, 16),
                      "short.mp4": (1, 16, 16), "still.png": (1, 16, 16)}
    for info, bucket in zip(split.videos, data.assignments["all"]):
        clip = split[(split.videos.index(info), data.buckets[bucket])]["video"]
        assert clip.shape == (3, *data.buckets[bucket])
        if info.path.suffix == ".mp4":
            height, width = disc_extent(clip)
            assert abs(height - width) <= 1, (info.path.name, height, width)  # a disc stays a disc
    shapes = {tuple(batch["video"].shape[2:]) for batch in data.train_dataloader()}
    assert shapes == {(5, 16, 32), (5, 32, 16), (5, 16, 16), (1, 16, 16)}  # every batch one bucket

    # a wide file in a square-only folder is centre-cropped (never squeezed) when max_crop allows it ...
    square_only = VideoFolder(str(root), buckets=[[5, 24, 24]], max_crop=0.5, val_fraction=0.0)
    with pytest.warns(UserWarning, match=r"short.mp4 \(64x64, 2 frames\): needs a bucket of at most 2 frames"):
        square_only.setup()
    videos = square_only.splits["all"].videos
    wide = square_only.splits["all"][([v.path.name for v in videos].index("wide.mp4"), (5, 24, 24))]["video"]
    height, width = disc_extent(wide)
    assert abs(height - width) <= 1 and height == pytest.approx(0.6 * 24, abs=1.5)
    # ... and skipped, by name, when it would crop more
    strict = VideoFolder(str(root), buckets=[[5, 24, 24]], max_crop=0.3, val_fraction=0.0)
    with pytest.warns(UserWarning, match=r"wide.mp4 \(96x48, 12 frames\): its nearest bucket \(5, 24, 24\) would crop 50%"):
        strict.setup()
    assert sorted(v.path.name for v in strict.splits["all"].videos) == ["square.mp4"]


def test_a_folder_whose_files_fit_no_bucket_is_one_clear_error(tmp_path):
    root = tmp_path / "short"
    root.mkdir()
    disc_video(root / "a.mp4", 32, 32, frames=3)
    with pytest.warns(UserWarning), pytest.raises(DataError) as error:
        VideoFolder(str(root), buckets=[[9, 32, 32], [5, 32, 64]]).setup()
    assert str(error.value) == (
        f"VideoFolder: no file in {root} fits a bucket (buckets [(9, 32, 32), (5, 32, 64)], max_crop=0.5); first: "
        f"{root / 'a.mp4'} (32x32, 3 frames): needs a bucket of at most 3 frames")


def bucket_fit(root, steps: int, every: int, vae: str, *extra: str) -> list[str]:
    """A tiny sora-tiny-buckets run (the recipe's MiniLM conditioner, the VAE fixture, 16-px buckets)."""
    checkpoint = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(root / "checkpoints"), "filename": "{step}", "every_n_train_steps": every,
                                "save_top_k": -1, "save_last": False}}
    return ["fit", "--config", "sora-tiny-buckets", f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}",
            f"--trainer.callbacks={json.dumps([checkpoint])}", "--trainer.logger=false", "--trainer.max_time=null",
            "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0", "--trainer.precision=32-true",
            "--model.warmup_steps=1", f"--model.tokenizer.init_args.checkpoint={vae}",
            "--model.backbone.init_args.dim=32", "--model.backbone.init_args.depth=1", "--model.backbone.init_args.heads=2",
            f"--data.init_args.buckets={json.dumps(BUCKETS)}", "--data.init_args.bucket_weights=[1,1,1,1]",
            "--data.init_args.batch_size=2", "--data.init_args.train_size=24", *extra]


def test_a_mixed_bucket_run_with_images_trains_and_resumes_exactly(run_cli, vae_checkpoint, tmp_path):
    assert run_cli(*bucket_fit(tmp_path / "whole", 8, 4, vae_checkpoint)) == 0
    middle = tmp_path / "whole" / "checkpoints" / "step=4.ckpt"
    assert run_cli(*bucket_fit(tmp_path / "resumed", 8, 4, vae_checkpoint), f"--ckpt_path={middle}") == 0
    reference, resumed = load(tmp_path / "whole" / "checkpoints" / "step=8.ckpt"), load(tmp_path / "resumed" / "checkpoints" / "step=8.ckpt")
    assert resumed["global_step"] == 8
    start = load(middle)["state_dict"]
    assert max((reference["state_dict"][k] - v).abs().max().item() for k, v in start.items()
               if k.startswith("backbone.")) > 1e-4  # the last 4 steps trained something
    assert differences(reference, resumed)[1] <= 1e-6
    # the 8 steps drew every bucket, 1-frame images included (the same seeded sampler the run used)
    data = SyntheticWorld(buckets=BUCKETS, bucket_weights=[1, 1, 1, 1], batch_size=2, train_size=24, max_objects=1)
    assert {tuple(b["video"].shape[2:]) for _, b in zip(range(8), data.train_dataloader())} == {tuple(b) for b in BUCKETS}


def test_a_bucket_that_does_not_fit_the_compression_fails_before_training(run_cli, vae_checkpoint, tmp_path, capsys):
    args = bucket_fit(tmp_path / "bad", 2, 1, vae_checkpoint, "--data.init_args.buckets=[[5,16,16],[4,16,20]]",
                      "--data.init_args.bucket_weights=null")
    assert run_cli(*args) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "SyntheticWorld bucket (T, H, W)=(4, 16, 20) does not fit VAE (compression (2, 4, 4), causal) with DiT " \
           "patches (1, 2, 2): valid buckets have T in 1, 3, 5, ..., H a multiple of 8 and W a multiple of 8; " \
           "nearest: (3, 16, 16), (3, 16, 24), (5, 16, 16), (5, 16, 24)" in message
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_adherence_is_reported_per_bucket(run_cli, vae_checkpoint, tmp_path):
    assert run_cli(*bucket_fit(tmp_path / "run", 2, 2, vae_checkpoint)) == 0
    overrides = json.dumps(bucket_fit(tmp_path / "run", 2, 2, vae_checkpoint)[4:])
    assert run_cli("adherence", "--config", "sora-tiny-buckets", "--ckpt_path", tmp_path / "run" / "checkpoints" / "step=2.ckpt",
                   "--overrides", overrides, "--samples", "2", "--steps", "2", "--judge_steps", "8",
                   "--precision", "32", "--out", "adherence.json") == 0
    results = json.loads((tmp_path / "adherence.json").read_text())
    assert results["samples"] == 2 and results["steps"] == 2
    assert all(rate in (0, 0.5, 1) for bucket in results["buckets"].values() for rate in bucket["generated"].values())  # 2 clips judged
    assert set(results["buckets"]) == {"5x16x16", "5x16x32", "5x32x16", "1x16x16"}
    assert set(results["buckets"]["1x16x16"]["generated"]) == {"shape", "colour"}  # a still has no direction
    assert set(results["buckets"]["5x16x32"]["generated"]) == {"shape", "colour", "direction"}
    for bucket in results["buckets"].values():
        assert bucket["in_frame"]["real"] > 0.9  # real subjects stay in the frame: the measure reads them
        assert 0 <= bucket["in_frame"]["generated"] <= 1
