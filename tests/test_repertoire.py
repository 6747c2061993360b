"""Sora's repertoire from the one frame-conditioning mechanism: loops, connections, edits (SDEdit), long
videos window by window and preview -> refine (`TASKS` in plugins/generation.py, `Prompts` in
plugins/prompts.py). Given frames come out exactly as given; every task runs through the CLI and writes
playable mp4s; the flags take effect; bad input is one line naming the value and the valid range."""
from __future__ import annotations

import warnings
from pathlib import Path

import av
import pytest
import torch

from patchworld import WorldModel
from patchworld.data.video_io import read_clip, write_video
from patchworld_plugins import DiT, Flow, Pixels, TinyTextEncoder
from patchworld_plugins.prompts import Prompts

TINY = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "32",
        "--model.conditioner.init_args.depth", "1", "--trainer.precision", "32-true"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
PROMPT = ["--data", "Prompts", "--data.prompts", '["a large red circle moves to the right slowly"]']


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """sora-tiny-sizes (both of its sizes), tiny, fitted for 2 steps on 4-frame clips: it records a 4-frame
    training clip length, the default window for longer videos."""
    from patchworld.cli import main

    root = tmp_path_factory.mktemp("repertoire")
    assert main(["fit", "--config", "sora-tiny-sizes", *TINY, *QUIET, "--data.init_args.buckets", "[[4, 16, 16], [4, 32, 32]]",
                 "--data.init_args.batch_size", "2", "--trainer.max_steps", "2", "--trainer.max_time", "null",
                 "--trainer.limit_val_batches", "0", f"--trainer.default_root_dir={root}"]) == 0
    path = next(root.rglob("last.ckpt"))
    assert torch.load(path, weights_only=True)["patchworld_clip_frames"] == 4
    return path


def predict(run_cli, checkpoint, root: str, *args: str, steps: int = 2) -> list[Path]:
    """`patchworld predict` with the tiny model and one prompt into run directory `root`; the mp4s written."""
    assert run_cli("predict", "--config", "sora-tiny-sizes", *TINY, *QUIET, "--ckpt_path", checkpoint,
                   "--trainer.default_root_dir", root, "--model.objective.init_args.steps", str(steps),
                   *PROMPT, "--data.size", "[16, 16]", *args) == 0
    return sorted((Path(root) / "predictions").glob("*.mp4"))


def decode(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def clip_file(path: Path, frames: int, seed: int, size: tuple[int, int] = (16, 16)) -> Path:
    torch.manual_seed(seed)
    return write_video(path, torch.rand(3, frames, *size) * 2 - 1)


def tiny_world() -> WorldModel:
    torch.manual_seed(0)
    world = WorldModel(Pixels(), Flow(progress=False, steps=3), DiT(dim=32, depth=1, heads=2, patch_size=(2, 4, 4)),
                       TinyTextEncoder(dim=32, depth=1, heads=2)).eval()
    for parameter in world.backbone.parameters():  # perturb the zero-initialised output so samples vary
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    return world


def first_batch(**options) -> dict:
    data = Prompts(prompts=["a red circle", "a blue square"], size=(16, 16), **options)
    return next(iter(data.predict_dataloader()))


# ---- given frames come out exactly as given -------------------------------------------------------
@pytest.mark.parametrize("task, options", [
    ("connect", {"frames": 8, "context_frames": 2}),
    ("loop", {"frames": 8, "context_frames": 2}),
    ("extend_forward", {"frames": 12, "context_frames": 2, "window": 6, "overlap": 2}),  # a long video
    ("interpolate", {"frames": 8}),
], ids=["connect", "loop", "long", "interpolate"])
def test_given_frames_come_out_exactly(task, options, tmp_path):
    files = {"connect": [clip_file(tmp_path / "a.mp4", 5, 1), clip_file(tmp_path / "b.mp4", 5, 2)],
             "extend_forward": [clip_file(tmp_path / "a.mp4", 3, 1)],
             "interpolate": [clip_file(tmp_path / "a.mp4", 5, 1)]}
    batch = first_batch(task=task, condition=[str(p) for p in files.get(task, [])], **options)
    world = tiny_world()
    out = world.objective.predict_step(world, batch)["video"]  # (B, 3, T, 16, 16)
    given = batch["given"][0]
    assert out.shape == batch["video"].shape and given.any() and not given.all()
    if task == "loop":  # its given frames are its own text-to-video sample rolled by half: frame 0 is that
        sample = world.objective.predict_step(world, {**batch, "task": "t2v", "given": None})["video"]
        assert torch.equal(out[:, :, [0, 1, 6, 7]], sample[:, :, [4, 5, 2, 3]])  # sample's frame 4, its last 3
        return
    assert torch.equal(out[:, :, given], batch["video"][:, :, given])
    if task == "connect":  # the end of a opens the clip, the start of b closes it
        a, b = (read_clip(p, None, (16, 16)) for p in files["connect"])
        assert torch.equal(out[:, :, :2], a[None, :, -2:].expand(2, -1, -1, -1, -1))
        assert torch.equal(out[:, :, -2:], b[None, :, :2].expand(2, -1, -1, -1, -1))


def test_edit_strength_sets_how_far_from_the_source(tmp_path):
    """SDEdit: the source noised to `strength`, then denoised: the output moves away from the source as the
    strength grows, and strength 1 is plain text-to-video from the same noise."""
    source = clip_file(tmp_path / "source.mp4", 4, 3)
    world = tiny_world()
    distance = {}
    for strength in (0.2, 0.6, 1.0):
        batch = first_batch(task="edit", condition=[str(source)], frames=4, strength=strength)
        assert not batch["given"].any()  # nothing given: the source is a starting point, not kept
        distance[strength] = (world.objective.predict_step(world, batch)["video"] - batch["video"]).abs().mean()
    assert distance[0.2] < distance[0.6] < distance[1.0]
    t2v = world.objective.predict_step(world, {**first_batch(frames=4), "video": batch["video"]})["video"]
    assert torch.equal(world.objective.predict_step(world, batch)["video"], t2v)


# ---- every task through the CLI -----------------------------------------------------------------------
def test_loop_connect_and_edit_write_playable_mp4s(run_cli, checkpoint, tmp_path):
    (loop,) = predict(run_cli, checkpoint, "loop", "--data.task", "loop", "--data.frames", "4",
                      "--data.context_frames", "1")
    a = clip_file(tmp_path / "a.mp4", 6, 1, size=(24, 20))  # another size: resized, as for every condition file
    b = clip_file(tmp_path / "b.mp4", 6, 2)
    (connect,) = predict(run_cli, checkpoint, "connect", "--data.task", "connect", "--data.condition", f"[{a}, {b}]",
                         "--data.frames", "6", "--data.window", "6", "--data.context_frames", "2")
    (edit,) = predict(run_cli, checkpoint, "edit", "--data.task", "edit", "--data.condition", f"[{b}]",
                      "--data.frames", "4", "--data.strength", "0.5")
    for path, frames in [(loop, 4), (connect, 6), (edit, 4)]:
        decoded = decode(path)
        assert len(decoded) == frames and decoded[0].shape == (16, 16, 3)
    assert path.with_suffix(".png").is_file()  # the frame strip


def test_long_video_windows_follow_window_and_overlap(run_cli, checkpoint, monkeypatch):
    """12 frames: windows of the recorded 4-frame clip length by default, each continuing from the last
    `overlap` frames; --data.window and --data.overlap change how many windows that takes."""
    calls = []
    generate = Flow.generate
    monkeypatch.setattr(Flow, "generate", lambda self, *a, **k: calls.append(1) or generate(self, *a, **k))
    windows = {}
    for n, option in enumerate(([], ["--data.overlap", "1"], ["--data.window", "6", "--data.overlap", "2"],
                                ["--data.window", "12"])):
        calls.clear()
        (video,) = predict(run_cli, checkpoint, f"long{n}", "--data.frames", "12", *option)
        assert len(decode(video)) == 12
        windows[" ".join(option)] = len(calls)
    # starts 0, 2, 4, 6, 8 (overlap 4 // 2); 0, 3, 6, 8; 0, 4, 6; one window
    assert windows == {"": 5, "--data.overlap 1": 4, "--data.window 6 --data.overlap 2": 3, "--data.window 12": 1}


def test_preview_then_refine(run_cli, checkpoint, monkeypatch):
    """A 16x16 preview refined at 32x32: an edit of the upsampled preview from the default strength 0.3, so
    only the sampler's steps below it (2 of 4: 0.3 -> 0.25 -> 0), or below --data.strength (0.75: 3 of 4)."""
    (preview,) = predict(run_cli, checkpoint, "preview", "--data.frames", "4")
    steps = []
    step = Flow.step
    monkeypatch.setattr(Flow, "step", lambda self, *args: steps.append(1) or step(self, *args))
    for strength, expected in ([], 2), (["--data.strength", "0.75"], 3):
        steps.clear()
        (refined,) = predict(run_cli, checkpoint, f"refined{expected}", "--data.frames", "4", "--data.size", "[32, 32]",
                             "--data.refine_from", str(preview), *strength, steps=4)
        assert len(steps) == expected
        decoded = decode(refined)
        assert len(decoded) == 4 and decoded[0].shape == (32, 32, 3)


# ---- bad input: one line naming the value and the valid range ----------------------------------------
@pytest.fixture
def fails(run_cli, capsys, tmp_path, checkpoint):
    """Run predict with the tiny model; it must fail with one line `patchworld: error: ...` and leave no run."""

    def run(*args: str) -> str:
        assert run_cli("predict", "--config", "sora-tiny-sizes", *TINY, *QUIET, "--ckpt_path", checkpoint,
                       "--trainer.default_root_dir", "run", *PROMPT, "--data.size", "[16, 16]", *args) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("patchworld: error")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert not (tmp_path / "run").exists()
        return lines[0].removeprefix("patchworld: error: ")

    return run


def test_bad_repertoire_input(fails, tmp_path):
    one = clip_file(tmp_path / "one.mp4", 1, 1)
    four = clip_file(tmp_path / "four.mp4", 4, 2)
    (tmp_path / "notes.txt").write_text("not a video")
    assert fails("--data.task", "edit", "--data.condition", f"[{four}]", "--data.strength", "1.5").startswith(
        "strength 1.5 is out of range: give a value in (0, 1]")
    assert fails("--data.refine_from", str(four), "--data.strength", "0").startswith(
        "strength 0.0 is out of range: give a value in (0, 1]")
    assert fails("--data.strength", "0.5") == "strength applies to task edit or --data.refine_from, not to task 't2v'"
    assert fails("--data.frames", "16", "--data.window", "8", "--data.overlap", "8") == \
        "overlap 8 is out of range for 8-frame windows: give 1 to 7"
    assert fails("--data.frames", "16", "--data.overlap", "0").startswith("overlap 0 is out of range: give 1 to")
    assert fails("--data.frames", "16", "--data.overlap", "4") == \
        "overlap 4 is out of range for 4-frame windows: give 1 to 3"  # the window the checkpoint recorded
    assert fails("--data.window", "1").startswith("window 1 is out of range: give at least 2 frames")
    assert fails("--data.refine_from", "notes.txt").startswith("refine_from 'notes.txt' is not a video")
    assert fails("--data.task", "connect", "--data.frames", "8", "--data.context_frames", "2",
                 "--data.condition", f"[{four}]") == "task 'connect' takes 2 condition files, got 1: " + f"['{four}']"
    assert fails("--data.task", "connect", "--data.frames", "8", "--data.context_frames", "2",
                 "--data.condition", f"[{one}, {four}]").startswith(
        f"{one} has 1 frame, too few for task 'connect': it takes 2")
    assert fails("--data.task", "edit", "--data.frames", "8", "--data.condition", f"[{four}]").startswith(
        f"{four} has 4 frames, too few for task 'edit': it takes 8")
    assert fails("--data.task", "loop", "--data.frames", "8", "--data.context_frames", "4").startswith(
        "context_frames=4 is out of range for task 'loop' on a 8-frame clip: give 1 to 3")


def test_load_world_takes_the_training_clip_length_from_the_checkpoint(checkpoint):
    from patchworld.recipes import load_world

    world, _ = load_world("sora-tiny-sizes", checkpoint, TINY)  # what `patchworld adherence` uses
    assert world.clip_frames == 4


def test_a_model_that_does_not_know_its_clip_length_says_it_makes_one_window():
    world = tiny_world()  # built here, never trained: like a checkpoint from before clip lengths were saved
    with pytest.warns(UserWarning, match="all 6 frames are made in one window; give --data.window"):
        world.objective.predict_step(world, first_batch(frames=6))
    world.clip_frames = 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        world.objective.predict_step(world, first_batch(frames=6))
