"""Matched possible/impossible sets: determinism, the frame matching, each violation's physics, user folders."""
from collections import Counter

import numpy as np
import pytest
import torch

from patchworld import ComponentError, DataError
from patchworld.data.matched import (MATCHED_VIOLATIONS, matched_sets, read_matched_folder, render_matched_set,
                                     write_matched_folder)
from patchworld.data.video_io import write_video

# (frames, (H, W)) combinations every violation is checked on: the minimum length, odd and even, non-square
GEOMETRIES = [(8, (32, 32)), (9, (24, 40)), (16, (40, 24)), (13, (32, 48))]


def frame_counter(videos: torch.Tensor) -> Counter:
    """Multiset of the frames of clips (K, 3, T, H, W), each frame by its exact bytes."""
    return Counter(videos[k, :, t].numpy().tobytes() for k in range(videos.shape[0]) for t in range(videos.shape[2]))


def subject_mask(frame: torch.Tensor, background, threshold: float = 0.05) -> torch.Tensor:
    """(H, W) pixels of a (3, H, W) frame that differ from the flat background."""
    return (frame - torch.tensor(background).view(3, 1, 1)).abs().amax(0) > threshold


def test_sets_are_deterministic_and_vary_by_index_and_seed():
    for violation in MATCHED_VIOLATIONS:
        a, b = render_matched_set(violation, 3), render_matched_set(violation, 3)
        assert torch.equal(a.videos, b.videos) and a.event_frame == b.event_frame and a.name == b.name
        assert not torch.equal(a.videos, render_matched_set(violation, 4).videos)
        assert not torch.equal(a.videos, render_matched_set(violation, 3, seed=1).videos)
    sets = matched_sets(("shape", "gravity"), sets_per_violation=3, frames=8)
    assert [s.name for s in sets] == ["shape-000", "shape-001", "shape-002", "gravity-000", "gravity-001", "gravity-002"]
    assert torch.equal(sets[4].videos, render_matched_set("gravity", 1, frames=8).videos)


@pytest.mark.parametrize("violation", MATCHED_VIOLATIONS)
def test_impossible_clips_are_the_possible_frames_spliced_at_the_event(violation):
    for k, (frames, size) in enumerate(GEOMETRIES):
        s = render_matched_set(violation, k, frames=frames, size=size)
        v, e = s.videos, s.event_frame
        assert v.shape == (4, 3, frames, *size) and v.dtype == torch.float32 and -1 <= v.min() and v.max() <= 1
        assert s.impossible.tolist() == [False, False, True, True] and s.violation == violation
        assert frames // 4 <= e < frames - frames // 4  # in the middle half
        # every frame exactly once in each class, so per-class frame statistics are equal
        assert frame_counter(v[s.impossible]) == frame_counter(v[~s.impossible])
        means = v.mean(dim=(1, 2, 3, 4))
        assert torch.allclose(means[s.impossible].sum(), means[~s.impossible].sum(), atol=1e-5)
        p0, p1, i01, i10 = v
        assert torch.equal(i01[:, :e], p0[:, :e]) and torch.equal(i01[:, e:], p1[:, e:])
        assert torch.equal(i10[:, :e], p1[:, :e]) and torch.equal(i10[:, e:], p0[:, e:])
        # not a no-op: each impossible clip differs visibly from both possible ones (before / after the event)
        assert (p0[:, :e] - p1[:, :e]).abs().max() > 0.3 and (p0[:, e:] - p1[:, e:]).abs().max() > 0.3
        for clip in (i01, i10):
            assert all((clip - p).abs().max() > 0.3 for p in (p0, p1))


@pytest.mark.parametrize("violation", ["continuity", "shape", "colour", "solidity", "gravity"])
def test_subject_stays_fully_in_view(violation):
    for k, (frames, size) in enumerate(GEOMETRIES):
        s = render_matched_set(violation, k, frames=frames, size=size)
        xy, r = s.info["trajectory"], s.info["radius"]  # (4, T, 2) pixels
        height, width = size
        assert (xy[..., 0] >= r).all() and (xy[..., 0] <= width - r).all()  # every shape reaches >= 0.85 r
        assert (xy[..., 1] >= r).all() and (xy[..., 1] <= height - r).all()
        if violation in ("solidity", "gravity"):  # no distractors: nothing but background on the border
            for clip in s.videos:
                for t in range(frames):
                    mask = subject_mask(clip[:, t], s.info["background"])
                    if s.info["bar"] is not None:  # the full-height wall touches the borders
                        mask[:, int(np.floor(s.info["bar"][0])): int(np.ceil(s.info["bar"][1]))] = False
                    assert not (mask[0].any() or mask[-1].any() or mask[1:-1, 0].any() or mask[1:-1, -1].any())


def test_permanence_subject_hidden_at_the_event_and_seen_before_and_after():
    for k, (frames, size) in enumerate(GEOMETRIES * 2):
        s = render_matched_set("permanence", k, frames=frames, size=size)
        p0, p1, i01, i10 = s.videos
        e = s.event_frame
        assert torch.allclose(p0[:, e], p1[:, e], atol=1e-5)  # fully behind the occluder
        assert (p0[:, :e] - p1[:, :e]).abs().amax(dim=(0, 2, 3)).max() > 0.3  # seen before (then vanishes in I01)
        assert (p0[:, e:] - p1[:, e:]).abs().amax(dim=(0, 2, 3)).max() > 0.3  # and after (appears in I10)
        assert torch.isnan(torch.from_numpy(s.info["trajectory"][1])).all()  # P1 has no subject
        left, right = s.info["bar"]
        assert 0.25 <= (right - left) / size[1] <= 0.35
        occluder = slice(int(np.ceil(left)), int(np.floor(right)))
        assert torch.equal(p0[:, :, :, occluder], p1[:, :, :, occluder]) or \
            torch.allclose(p0[:, :, :, occluder], p1[:, :, :, occluder], atol=1e-5)  # drawn on top


def test_solidity_bounces_off_the_wall_and_the_impossible_clip_goes_through():
    for k, (frames, size) in enumerate(GEOMETRIES * 2):
        s = render_matched_set("solidity", k, frames=frames, size=size)
        p0, p1, i01, i10 = s.videos
        e, (left, right) = s.event_frame, s.info["bar"]
        wall = torch.zeros(size[1], dtype=torch.bool)
        wall[int(np.floor(left)): int(np.ceil(right))] = True

        def columns(frame):
            return torch.nonzero(subject_mask(frame, s.info["background"]) & ~wall, as_tuple=True)[1]

        for t in range(frames):
            assert len(columns(p0[:, t])) and columns(p0[:, t]).max() < left  # P0 always left of the wall
            assert columns(p1[:, t]).min() > right  # P1, its mirror, always right of it
            if t >= e:
                assert columns(i01[:, t]).min() > right  # I01 came from the left and is now right: through
        x = s.info["trajectory"][0, :, 0]
        assert (np.diff(x[:e]) > 0).all() and (np.diff(x[e:]) < 0).all()  # towards the wall, bounce at e, back


def test_solidity_bounce_in_the_middle_half_for_any_length():
    for frames in range(8, 25):
        s = render_matched_set("solidity", frames, frames=frames)
        x, e = s.info["trajectory"][0, :, 0].astype(np.float64), s.event_frame
        unfolded = x[0] + (x[1] - x[0]) * np.arange(frames)  # where it would be without the wall
        assert np.allclose(x[:e], unfolded[:e], atol=1e-3)  # not yet bounced before e
        assert (x[e:] < unfolded[e:] - 1e-3).all()  # reflected from e on
        assert frames // 4 <= e < frames - frames // 4


def test_gravity_falls_accelerating_and_the_twin_is_its_reverse():
    for k, (frames, size) in enumerate(GEOMETRIES * 2):
        s = render_matched_set("gravity", k, frames=frames, size=size)
        p0, p1 = s.videos[:2]
        assert s.event_frame == frames // 2
        assert torch.equal(p1, p0.flip(1))  # thrown up: P0 played backwards
        ys = []
        for t in range(frames):  # centre of the subject's pixels, weighted by their contrast
            weight = (p0[:, t] - torch.tensor(s.info["background"]).view(3, 1, 1)).abs().amax(0)
            weight = weight * (weight > 0.05)
            ys.append(float((weight.sum(1) * torch.arange(size[0])).sum() / weight.sum()))
        assert (np.diff(ys) > -0.1).all() and ys[-1] - ys[0] > 0.25 * size[0]  # a clear fall, downwards
        half = (frames - 1) // 2
        assert ys[-1] - ys[-1 - half] > 2 * (ys[half] - ys[0])  # faster in the second half: accelerating
        assert np.polyfit(np.arange(frames), ys, 2)[0] > 0
        truth = np.diff(s.info["trajectory"][0, :, 1])
        assert (truth > 0).all() and (np.diff(truth) > 0).all()


def test_continuity_jump_is_at_least_three_radii_across_the_motion():
    for k, (frames, size) in enumerate(GEOMETRIES * 2):
        s = render_matched_set("continuity", k, frames=frames, size=size)
        xy, r = s.info["trajectory"], s.info["radius"]
        assert np.allclose(xy[0, :, 0], xy[1, :, 0])  # same horizontal motion
        assert (np.abs(xy[0, :, 1] - xy[1, :, 1]) >= 3 * r).all()
        assert abs(xy[0, -1, 0] - xy[0, 0, 0]) > r  # it does move


def test_bad_arguments_are_one_line_component_errors():
    with pytest.raises(ComponentError, match="frames >= 8") as info:
        render_matched_set("shape", 0, frames=7)
    assert "\n" not in str(info.value)
    with pytest.raises(ComponentError, match="permanence, continuity, shape, colour, solidity, gravity") as info:
        render_matched_set("levitation", 0)
    assert "levitation" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ComponentError, match="levitation"):
        matched_sets(("shape", "levitation"))
    with pytest.raises(ComponentError, match="object_scale"):
        render_matched_set("shape", 0, object_scale=5)
    with pytest.raises(ComponentError, match="at least 24 pixels"):
        render_matched_set("shape", 0, size=(16, 32))
    for violation in MATCHED_VIOLATIONS:  # the largest allowed objects still fit the smallest frames
        s = render_matched_set(violation, 0, frames=8, size=(24, 24), object_scale=1.5)
        assert s.videos.shape == (4, 3, 8, 24, 24)


def test_folder_round_trip(tmp_path):
    sets = matched_sets(sets_per_violation=1, frames=8, size=(32, 48))
    assert write_matched_folder(sets, tmp_path) == tmp_path
    assert sorted(p.name for p in (tmp_path / "gravity" / "gravity-000").iterdir()) == ["event.txt", "impossible", "possible"]
    back = {(s.violation, s.name): s for s in read_matched_folder(tmp_path)}
    assert list(back) == sorted(back)  # sorted by violation, then set
    assert set(back) == {(s.violation, s.name) for s in sets}
    for s in sets:
        r = back[(s.violation, s.name)]
        assert r.videos.shape == s.videos.shape and r.impossible.tolist() == s.impossible.tolist()
        assert r.event_frame == s.event_frame and len(r.info["paths"]) == 4
        assert (r.videos - s.videos).abs().mean() < 0.1  # H.264 is lossy
    # frames keeps the first N, size resizes
    one = write_matched_folder(sets[:1], tmp_path / "one")
    short = read_matched_folder(one, frames=6, size=(16, 24))
    assert len(short) == 1 and short[0].videos.shape == (4, 3, 6, 16, 24)
    with pytest.raises(DataError, match="shorter than frames=9"):
        read_matched_folder(one, frames=9)
    with pytest.raises(DataError, match="other clips"):  # writing over a set that holds more clips
        (tmp_path / "shape" / "shape-000" / "possible" / "zz.mp4").write_bytes(b"")
        write_matched_folder(sets[2:3], tmp_path)


def tiny(path, frames=8, size=(16, 16), value=0.0):
    return write_video(path, torch.full((3, frames, *size), value))


def make_set(root, name="s1", possible=1, impossible=1, frames=(8,), sizes=((16, 16),)):
    folder = root / "mine" / name
    for kind, count in (("possible", possible), ("impossible", impossible)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            n = len(list(folder.rglob("*.mp4")))
            tiny(folder / kind / f"{k}.mp4", frames[n % len(frames)], sizes[n % len(sizes)])
    return folder


def single_line_error(root, match, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        read_matched_folder(root, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_folders_are_one_line_data_errors_naming_the_set(tmp_path):
    missing = make_set(tmp_path / "a", possible=2, impossible=1)
    message = single_line_error(tmp_path / "a", "missing twin")
    assert str(missing) in message and "possible/ has 2 clips" in message and "impossible/ has 1 clip" in message
    extra = make_set(tmp_path / "b", possible=1, impossible=2)
    message = single_line_error(tmp_path / "b", "extra twin")
    assert str(extra) in message and "impossible/ has 2 clips" in message
    uneven = make_set(tmp_path / "c", frames=(8, 10))
    message = single_line_error(tmp_path / "c", "different numbers of frames")
    assert str(uneven) in message and "possible/0.mp4=8" in message and "impossible/0.mp4=10" in message
    assert read_matched_folder(tmp_path / "c", frames=8)[0].videos.shape == (2, 3, 8, 16, 16)  # unless cut
    lonely = tmp_path / "d" / "mine" / "s1"
    tiny(lonely / "possible" / "0.mp4")
    assert str(lonely) in single_line_error(tmp_path / "d", "no impossible/ folder")
    (tmp_path / "e").mkdir()
    message = single_line_error(tmp_path / "e", "no matched sets")
    assert str(tmp_path / "e") in message and "<violation>/<set>/possible" in message
    sizes = make_set(tmp_path / "f", sizes=((16, 16), (16, 24)))
    assert str(sizes) in single_line_error(tmp_path / "f", "share one size")
    assert read_matched_folder(tmp_path / "f", size=(16, 16))[0].videos.shape == (2, 3, 8, 16, 16)
    broken = make_set(tmp_path / "g")
    (broken / "impossible" / "0.mp4").write_bytes(b"not a video")
    assert str(broken / "impossible" / "0.mp4") in single_line_error(tmp_path / "g", "cannot decode")
    event = make_set(tmp_path / "h")
    (event / "event.txt").write_text("three\n")
    assert str(event) in single_line_error(tmp_path / "h", "event.txt")
    (event / "event.txt").write_text("3\n")
    assert read_matched_folder(tmp_path / "h")[0].event_frame == 3
    flat = tmp_path / "i" / "mine"  # one level too shallow
    tiny(flat / "possible" / "0.mp4"), tiny(flat / "impossible" / "0.mp4")
    assert str(flat) in single_line_error(tmp_path / "i", "one level deeper")
