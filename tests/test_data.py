"""SyntheticWorld and VideoFolder: determinism, labels, impossible events, sizes, real files and their errors."""
import numpy as np
import pytest
import torch

from patchworld import DataError
from patchworld.data import SyntheticWorld, VideoFolder, probe_video, read_clip, write_video
from patchworld.data.synthetic import DIRECTIONS, TASKS, VIOLATIONS, render


def clip(index=0, split="train", **kwargs):
    return SyntheticWorld(**kwargs).splits[split][index]


def test_clips_are_deterministic_by_seed_and_split():
    a, b = clip(5), clip(5)
    assert torch.equal(a["video"], b["video"]) and a["caption"] == b["caption"] and a["labels"] == b["labels"]
    assert not torch.equal(clip(5)["video"], clip(5, seed=1)["video"])
    assert not torch.equal(clip(5)["video"], clip(5, split="val")["video"])


def test_clip_format_captions_and_labels():
    item = clip(3, frames=8, size=(48, 80))
    video = item["video"]
    assert video.shape == (3, 8, 48, 80) and video.dtype == torch.float32
    assert -1 <= video.min() and video.max() <= 1
    assert item["caption"] in item["captions"] and len(set(item["captions"])) == 3
    labels = item["labels"]
    assert set(labels) == set(TASKS)
    for task, value in labels.items():
        assert 0 <= value < len(TASKS[task])
    shape, colour = TASKS["shape"][labels["shape"]], TASKS["colour"][labels["colour"]]
    assert all(shape in text and colour in text for text in item["captions"])


def _centroid(frame, colour):
    """Centre of the pixels close to a colour in a (3, H, W) frame in [-1, 1]."""
    rgb = torch.tensor(colour).view(3, 1, 1) * 2 - 1
    ys, xs = torch.nonzero((frame - rgb).abs().amax(0) < 0.05, as_tuple=True)
    return (xs.float().mean().item(), ys.float().mean().item()) if len(xs) else None


def test_direction_label_matches_the_rendered_motion():
    from patchworld.data.synthetic import COLOURS

    checked = 0
    for index in range(40):
        item = clip(index, max_objects=1, gravity_prob=0.0)
        colour = COLOURS[TASKS["colour"][item["labels"]["colour"]]]
        start, after = _centroid(item["video"][:, 0], colour), _centroid(item["video"][:, 1], colour)
        if start is None or after is None:
            continue
        dx, dy = after[0] - start[0], after[1] - start[1]
        seen = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
        assert DIRECTIONS[item["labels"]["direction"]] == seen
        checked += 1
    assert checked >= 30


def test_time_reversal_plays_the_clip_backwards():
    seed = np.random.SeedSequence(7)
    forward = render(np.random.default_rng(seed), 8, 32, 32, reverse_prob=0.0)
    backward = render(np.random.default_rng(seed), 8, 32, 32, reverse_prob=1.0)
    assert backward["labels"]["reversed"] == 1 and forward["labels"]["reversed"] == 0
    assert torch.allclose(backward["video"], forward["video"].flip(1))


@pytest.mark.parametrize("violation", VIOLATIONS[1:])
def test_impossible_clip_matches_its_possible_twin_until_the_event(violation):
    kwargs = dict(frames=16, height=48, width=48, gravity_prob=0.0)
    twin_course = violation == "pass_through"
    for index in range(6):
        possible = render(np.random.default_rng([3, index]), violation="none", collision_course=twin_course, **kwargs)
        impossible = render(np.random.default_rng([3, index]), violation=violation, **kwargs)
        assert impossible["labels"]["violation"] == VIOLATIONS.index(violation)
        differs = (possible["video"] - impossible["video"]).abs().amax(dim=(0, 2, 3)) > 1e-4  # (T,)
        if differs.any():
            first = int(differs.nonzero()[0])
            assert first >= 16 // 4 and differs[first:].float().mean() > 0.5
            return
    pytest.fail(f"{violation} never changed a clip")


def test_the_subject_is_the_largest_object_and_drawn_on_top():
    """Labels describe object 0; with several objects it must be visibly singled out: in the first frame it
    covers more pixels of its colour than any other object covers of theirs (it is larger and never hidden)."""
    from patchworld.data.synthetic import COLOURS, make_scene

    checked = 0
    for index in range(40):
        rng = np.random.default_rng([5, index])
        scene = make_scene(rng, 1.0, max_objects=3, gravity_prob=0.0, reverse_prob=0.0)
        if len(scene.shapes) < 2:
            continue
        assert (scene.radii[1:] < scene.radii[0]).all()
        video = render(np.random.default_rng([5, index]), 1, 64, 64, max_objects=3, gravity_prob=0.0)["video"]
        covered = [((video[:, 0] - (torch.tensor(COLOURS[c]).view(3, 1, 1) * 2 - 1)).abs().amax(0) < 0.1).sum().item()
                   for c in scene.colours]
        assert covered[0] > max(covered[1:]), (index, scene.shapes, covered)
        checked += 1
    assert checked >= 20


def test_friction_slows_objects_down_so_a_reversed_clip_speeds_up():
    from patchworld import ComponentError
    from patchworld.data.synthetic import make_scene, simulate

    rng = np.random.default_rng(3)
    scene = make_scene(rng, 1.0, max_objects=1, gravity_prob=0.0, reverse_prob=0.0, friction=0.2)
    scene.position[0], scene.velocity[0] = np.array([0.2, 0.5]), np.array([0.05, 0.0])  # far from every wall
    steps = np.linalg.norm(np.diff(simulate(scene, 6, 1.0)[0][:, 0], axis=0), axis=1)  # (5,) distance per frame
    assert np.allclose(steps[1:] / steps[:-1], 0.8)  # forwards each frame covers 80% of the last one's distance
    assert np.allclose(steps[::-1][1:] / steps[::-1][:-1], 1.25)  # backwards: faster and faster
    scene.friction = 0.0
    assert np.allclose(np.linalg.norm(np.diff(simulate(scene, 6, 1.0)[0][:, 0], axis=0), axis=1), 0.05)  # default: none
    slowed, free = (SyntheticWorld(frames=6, size=(32, 32), friction=f).splits["train"][0]["video"] for f in (0.2, 0.0))
    assert torch.equal(slowed[:, 0], free[:, 0]) and not torch.equal(slowed, free)  # the datamodule passes it on
    with pytest.raises(ComponentError, match="friction must be in"):
        SyntheticWorld(friction=1.0)


def test_object_scale_enlarges_objects():
    from patchworld import ComponentError
    from patchworld.data.synthetic import COLOURS

    areas = []
    for scale in (1.0, 2.0):
        item = render(np.random.default_rng([9, 1]), 1, 64, 64, max_objects=1, gravity_prob=0.0, object_scale=scale)
        colour = torch.tensor(COLOURS[TASKS["colour"][item["labels"]["colour"]]]).view(3, 1, 1) * 2 - 1
        areas.append(((item["video"][:, 0] - colour).abs().amax(0) < 0.1).sum().item())
    assert 3.0 < areas[1] / areas[0] < 5.0  # twice the radius: about four times the area
    with pytest.raises(ComponentError, match="object_scale must be in"):
        SyntheticWorld(object_scale=4.0)


def test_physics_labels_occur():
    labels = [clip(i, max_objects=3)["labels"] for i in range(60)]
    for task in ("bounced", "collided", "gravity"):
        assert 0 < sum(label[task] for label in labels) < 60, task
    assert {label["count"] for label in labels} == {0, 1, 2}


def test_variable_sizes_and_durations_per_batch():
    data = SyntheticWorld(buckets=[(4, 32, 32), (4, 32, 48), (8, 32, 32), (8, 32, 48)], batch_size=4, train_size=32)
    shapes = set()
    for batch in data.train_dataloader():
        assert batch["video"].shape[0] <= 4
        shapes.add(tuple(batch["video"].shape[2:]))
        assert set(batch["labels"]) == set(TASKS) and len(batch["caption"]) == batch["video"].shape[0]
    assert len(shapes) > 1 and shapes <= {(4, 32, 32), (4, 32, 48), (8, 32, 32), (8, 32, 48)}


def test_video_io_roundtrip(tmp_path):
    t, y, x = torch.meshgrid(torch.arange(6.0), torch.arange(30.0), torch.arange(40.0), indexing="ij")
    video = torch.stack([torch.sin((x + 3 * t) / 6), torch.cos(y / 5), (x - y) / 40]).clamp(-1, 1)  # smooth, moving
    path = write_video(tmp_path / "clip.mp4", video, fps=6)
    info = probe_video(path)
    assert (info.width, info.height) == (40, 30) and info.fps == pytest.approx(6)
    back = read_clip(path, 6, (30, 40))
    assert back.shape == (3, 6, 30, 40)
    error = (back - video).abs().mean()
    assert error < 0.06  # H.264 with 4:2:0 chroma is lossy, but close on smooth content
    assert (back - video.flip(1)).abs().mean() > 3 * error  # and frame order is kept
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp files left behind


def test_write_video_pads_odd_sizes_to_even(tmp_path):
    info = probe_video(write_video(tmp_path / "odd.mp4", torch.zeros(3, 2, 15, 21)))
    assert (info.width, info.height) == (22, 16)


def test_video_folder_labels_captions_and_bad_files(tmp_path, make_mp4):
    for label in ("cats", "dogs"):
        for k in range(2):
            make_mp4(tmp_path / label / f"{k}.mp4", frames=10, seed=k)
    (tmp_path / "dogs" / "1.txt").write_text("a dog runs\n")
    (tmp_path / "dogs" / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.warns(UserWarning, match=r"skipping .*broken\.mp4"), pytest.raises(DataError, match=r"1 of 5 .*20%"):
        VideoFolder(str(tmp_path), frames=4, size=(32, 32), val_fraction=0.0).setup("fit")  # default 0.1: too many
    data = VideoFolder(str(tmp_path), frames=4, size=(32, 32), batch_size=8, val_fraction=0.0, max_bad_fraction=0.25)
    with pytest.warns(UserWarning, match=r"skipping .*broken\.mp4"):
        data.setup("fit")
    batch = next(iter(data.predict_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 32, 32)
    assert sorted(batch["labels"]["label"].tolist()) == [0, 0, 1, 1]
    assert "a dog runs" in batch["caption"]


def test_video_folder_samples_clips_by_timestamp(tmp_path, make_mp4):
    path = make_mp4(tmp_path / "a.mp4", frames=16, fps=8)
    early, late = read_clip(path, 2, (48, 64), start=0.0), read_clip(path, 2, (48, 64), start=1.0)
    assert not torch.allclose(early, late)
    assert torch.allclose(read_clip(path, 8, (48, 64), start=1.0)[:, :2], late, atol=1e-6)


@pytest.mark.parametrize("make", ["empty", "not_videos", "missing"])
def test_video_folder_without_readable_video_is_a_one_line_error(tmp_path, make):
    root = tmp_path / "data"
    if make != "missing":
        root.mkdir()
    if make == "not_videos":
        (root / "notes.txt").write_text("hello")
        (root / "fake.mp4").write_bytes(b"\x00" * 100)
    data = VideoFolder(str(root))
    with pytest.warns(UserWarning) if make == "not_videos" else _no_warning():
        with pytest.raises(DataError) as error:
            data.setup("fit")
    assert "\n" not in str(error.value) and str(root) in str(error.value)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_umask_decides_the_mode_of_written_files(tmp_path):
    import os

    from patchworld.data.video_io import atomic_path

    old = os.umask(0o027)
    try:
        write_video(tmp_path / "a.mp4", torch.zeros(3, 2, 16, 16))
        os.umask(0o002)
        with atomic_path(tmp_path / "b.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.mp4").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.json"]


def _folder(tmp_path, make_mp4, make_corrupt_mp4, good=4, bad=1):
    """`good` readable mp4s (frames 0..) and `bad` ones corrupted past their first frame, sorted after them."""
    root = tmp_path / "videos"
    for k in range(good):
        make_mp4(root / f"{k}.mp4", frames=16, seed=k)
    for k in range(bad):
        path = make_corrupt_mp4(root / f"{good + k}_corrupt.mp4")
        probe_video(path)  # the first frame decodes ...
        with pytest.raises(DataError, match="cannot decode"):
            read_clip(path, 24, (32, 32))  # ... the rest does not
    return root


def test_file_corrupt_past_its_first_frame_is_replaced_named_once_and_summed_up(tmp_path, make_mp4, make_corrupt_mp4):
    root = _folder(tmp_path, make_mp4, make_corrupt_mp4, good=4, bad=1)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0, max_bad_fraction=0.25)
    data.setup("fit")  # probing passes: only reading finds it
    clips = data.splits["all"]
    assert clips.videos[4].path.name == "4_corrupt.mp4" and not data.unreadable.files
    with pytest.warns(UserWarning) as record:
        items = [clips[i] for i in range(5)] + [clips[4], data.splits["train"][4]]
    named = [str(w.message) for w in record if "4_corrupt.mp4" in str(w.message)]
    assert len(named) == 1 and "\n" not in named[0]  # named once, in one line, across splits and repeats
    assert torch.equal(items[4]["video"], items[0]["video"])  # replaced by the next readable index (wrapping)
    assert items[4]["index"] == 4 and items[4]["skipped"] == {str(root / "4_corrupt.mp4"): named[0].split("skipping ")[1]}
    assert "skipped" not in items[5]  # already known: skipped without trying again
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 video files in .*videos as unreadable \(20\.0%\): 4_corrupt\.mp4"):
        data.teardown("fit")


def test_too_many_files_failing_while_training_stop_the_run_in_one_line(tmp_path, make_mp4, make_corrupt_mp4):
    root = _folder(tmp_path, make_mp4, make_corrupt_mp4, good=2, bad=2)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0, max_bad_fraction=0.3)
    data.setup("fit")
    clips = data.splits["all"]
    with pytest.warns(UserWarning) as record, pytest.raises(DataError) as error:
        clips[2]  # 2_corrupt (1 of 4: within max_bad_fraction), its replacement 3_corrupt (2 of 4 > 0.3)
    assert [w.message.args[0].split("/")[-1].split(":")[0] for w in record] == ["2_corrupt.mp4", "3_corrupt.mp4"]
    message = str(error.value)
    assert "\n" not in message and str(root) in message and "2 of 4" in message and "50%" in message
    assert "max_bad_fraction=0.3" in message


def test_fit_on_a_folder_with_a_corrupt_file_finishes_and_saves_a_checkpoint(run_cli, recipe_path, tmp_path, make_mp4,
                                                                             make_corrupt_mp4):
    root = _folder(tmp_path, make_mp4, make_corrupt_mp4, good=4, bad=1)
    args = ["fit", "--config", recipe_path("videomae-tiny"), "--model.backbone.init_args.depth", "1",
            "--model.backbone.init_args.dim", "48", "--data", "VideoFolder", "--data.root", str(root),
            "--data.frames", "4", "--data.size", "[32, 32]", "--data.batch_size", "5", "--data.val_fraction", "0.0",
            "--data.max_bad_fraction", "0.25", "--data.num_workers", "2", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")]
    with pytest.warns(UserWarning) as record:
        assert run_cli(*args) == 0
    messages = [str(w.message) for w in record]
    # found in a worker, named once by the main process (the folder's batch hook runs in a real fit)
    assert sum("skipping" in m and "4_corrupt.mp4" in m for m in messages) == 1
    assert any("skipped 1 of 5" in m for m in messages)  # the summary at the end of fit
    assert list((tmp_path / "run").glob("lightning_logs/*/checkpoints/last.ckpt"))


def test_training_clip_starts_are_a_function_of_seed_epoch_and_index(tmp_path, make_mp4):
    import random

    make_mp4(tmp_path / "long.mp4", frames=48, fps=8)  # 6 s: room for many starts of a 4-frame clip

    def starts(seed=0, epoch=0):
        data = VideoFolder(str(tmp_path), frames=4, size=(32, 32), val_fraction=0.0, seed=seed)
        data.setup("fit")
        data.splits["train"].set_epoch(epoch)  # what the loader does before each epoch
        random.seed(len(starts.calls))  # the global random module plays no part
        starts.calls.append(1)
        return [data.splits["train"][0]["video"] for _ in range(2)]
    starts.calls = []

    a, again = starts(), starts()
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], again[0])  # the same clip every time
    assert not torch.equal(a[0], starts(epoch=1)[0])  # set_epoch took effect
    assert not torch.equal(a[0], starts(seed=1)[0])  # seed took effect
    middle = VideoFolder(str(tmp_path), frames=4, size=(32, 32), val_fraction=0.0)
    middle.setup("fit")
    assert torch.equal(middle.splits["all"][0]["video"], middle.splits["all"][0]["video"])


def test_workers_forked_after_the_main_process_read_a_clip_read_theirs(tmp_path, make_mp4):
    """PyAV 18.1.1 scales frames with a thread pool by default; one used before the DataLoader forks its
    workers deadlocked them (a fit's sanity check hung). Reading scales on one thread, so workers finish."""
    from torch.utils.data import DataLoader

    from patchworld.data.video_folder import collate

    for k in range(4):
        make_mp4(tmp_path / "videos" / f"{k}.mp4", seed=k)
    data = VideoFolder(str(tmp_path / "videos"), frames=4, size=(32, 40), val_fraction=0.0)
    data.setup("fit")
    first = data.splits["all"][0]["video"]  # the main process scales frames first
    loader = DataLoader(data.splits["all"], batch_size=2, num_workers=2, collate_fn=collate, timeout=60,
                        multiprocessing_context="fork")
    batches = list(loader)  # a deadlocked worker raises after `timeout` instead of hanging
    assert [b["video"].shape for b in batches] == [(2, 3, 4, 32, 40)] * 2
    assert torch.equal(batches[0]["video"][0], first)


def test_files_found_unreadable_in_workers_are_named_once_by_the_main_process(tmp_path, make_mp4, make_corrupt_mp4):
    from torch.utils.data import DataLoader

    from patchworld.data.video_folder import collate

    root = _folder(tmp_path, make_mp4, make_corrupt_mp4, good=4, bad=1)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0, max_bad_fraction=0.25)
    data.setup("fit")
    loader = DataLoader(data.splits["all"], batch_size=1, num_workers=2, collate_fn=collate)
    with pytest.warns(UserWarning) as record:
        batches = [data.on_after_batch_transfer(batch, 0) for batch in loader]
    assert [str(w.message).count("4_corrupt.mp4") for w in record] == [1]
    assert all("skipped" not in batch for batch in batches)  # the model never sees it
    assert list(data.unreadable.files) == [str(root / "4_corrupt.mp4")]
