"""Bad input that users give patchworld: unreadable videos and images in a VideoFolder, and output locations
that cannot be written. Each case checks the one-line message (naming the file) and that nothing partial is
left behind."""
import errno
import os
from pathlib import Path

import pytest
import torch

from patchworld import DataError, PatchworldError
from patchworld.data import VideoFolder, write_video
from patchworld.data.video_io import atomic_path, check_writable


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _text(root, name):
    (root / name).write_text("this is not a video\n")


def _empty(root, name):
    (root / name).write_bytes(b"")


def _audio_only(root, name):
    import av
    import numpy as np

    with av.open(str(root / name), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _cut_gif(root, name):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(root / name)
    (root / name).write_bytes((root / name).read_bytes()[:20])


def _broken_link(root, name):
    os.symlink(root / "gone.mp4", root / name)


def _link_loop(root, name):
    os.symlink(root / name, root / name)


def _fifo(root, name):
    os.mkfifo(root / name)  # opening it to probe would block forever


# (make the bad entry, its name, what the warning says about it)
FOUND_AT_SETUP = {
    "text file named .mp4": (_text, "notes.mp4", "cannot decode video"),
    "zero-byte file": (_empty, "empty.mp4", "cannot decode video"),
    "mp4 with only audio": (_audio_only, "sound.mp4", "no video stream"),
    "gif cut short": (_cut_gif, "still.gif", "cannot decode video"),
    "broken link": (_broken_link, "moved.mp4", r"link to .*gone\.mp4 cannot be followed \(No such file or directory\)"),
    "symlink loop": (_link_loop, "loop.mp4", r"cannot be followed \(Too many levels of symbolic links\)"),
    "named pipe": (_fifo, "pipe.mp4", "not a regular file"),
}


@pytest.mark.parametrize("case", list(FOUND_AT_SETUP))
def test_unreadable_entry_is_named_skipped_and_counted(case, tmp_path, make_mp4):
    make, name, says = FOUND_AT_SETUP[case]
    root = tmp_path / "videos"
    make_mp4(root / "a.mp4", seed=0)
    make_mp4(root / "b.mp4", seed=1)
    make(root, name)
    before = _listing(root)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0, max_bad_fraction=0.5)
    with pytest.warns(UserWarning) as record:
        data.setup("fit")
    (message,) = [str(w.message) for w in record]
    assert "\n" not in message and str(root / name) in message
    assert message.startswith("VideoFolder: skipping ") and __import__("re").search(says, message)
    assert [v.path.name for v in data.splits["all"].videos] == ["a.mp4", "b.mp4"]
    assert list(data.unreadable.files) == [str(root / name)]  # counted as unreadable
    # the flag took effect: with the default max_bad_fraction (0.1) one bad entry in three stops the run
    with pytest.warns(UserWarning), pytest.raises(DataError) as error:
        VideoFolder(str(root), frames=4, size=(32, 32)).setup("fit")
    assert "\n" not in str(error.value) and f"1 of 3 video files in {root}" in str(error.value)
    assert "33%" in str(error.value) and name in str(error.value)
    assert _listing(root) == before  # nothing written, nothing removed


def test_directory_named_like_a_video_is_reported_not_counted(tmp_path, make_mp4):
    root = tmp_path / "videos"
    make_mp4(root / "a.mp4")
    (root / "frames.mp4").mkdir()
    make_mp4(root / "frames.mp4" / "inside.mp4", seed=1)
    before = _listing(root)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0)
    with pytest.warns(UserWarning, match=r"frames\.mp4 is a directory, not a video file") as record:
        data.setup("fit")
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert sorted(v.path.name for v in data.splits["all"].videos) == ["a.mp4", "inside.mp4"]  # its contents count
    assert not data.unreadable.files and _listing(root) == before


def test_video_corrupt_past_its_first_frame_is_named_when_read(tmp_path, make_mp4, make_corrupt_mp4):
    root = tmp_path / "videos"
    for k in range(9):
        make_mp4(root / f"{k}.mp4", seed=k)
    make_corrupt_mp4(root / "z_cut.mp4")
    before = _listing(root)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0)  # 1 in 10: the default allows it
    data.setup("fit")
    with pytest.warns(UserWarning) as record:
        item = data.splits["all"][9]
    (message,) = [str(w.message) for w in record]
    assert "\n" not in message and str(root / "z_cut.mp4") in message and "cannot decode video" in message
    assert torch.equal(item["video"], data.splits["all"][0]["video"])  # replaced by the next readable (wrapping)
    assert _listing(root) == before


def test_caption_that_is_not_text_skips_its_video_by_name(tmp_path, make_mp4):
    root = tmp_path / "videos"
    for k in range(10):
        make_mp4(root / f"{k}.mp4", seed=k)
    (root / "9.txt").write_bytes(b"\xff\xfe\x00binary")
    before = _listing(root)
    data = VideoFolder(str(root), frames=4, size=(32, 32), val_fraction=0.0)
    data.setup("fit")
    with pytest.warns(UserWarning) as record:
        item = data.splits["all"][9]
    (message,) = [str(w.message) for w in record]
    assert "\n" not in message and str(root / "9.mp4") in message and "caption 9.txt cannot be read" in message
    assert _listing(root) == before
    assert item["caption"] == "" and torch.equal(item["video"], data.splits["all"][0]["video"])


def test_folder_mostly_unreadable_is_one_line_naming_folder_count_and_fraction(tmp_path, make_mp4):
    root = tmp_path / "videos"
    make_mp4(root / "good.mp4")
    for k in range(3):
        (root / f"bad{k}.mp4").write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning), pytest.raises(DataError) as error:
        VideoFolder(str(root), max_bad_fraction=0.5).setup("fit")
    message = str(error.value)
    assert "\n" not in message and "3 of 4 video files in " + str(root) in message and "75%" in message
    assert "max_bad_fraction=0.5" in message and "bad0.mp4" in message


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_max_bad_fraction_outside_0_1_is_refused(tmp_path, value):
    with pytest.raises(DataError, match=rf"^VideoFolder: max_bad_fraction must be in \[0, 1\], got {value}$"):
        VideoFolder(str(tmp_path), max_bad_fraction=value)


def test_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    with pytest.raises(DataError) as error:
        VideoFolder(str(tmp_path / "clip.mp4")).setup("fit")
    assert str(error.value) == f"VideoFolder: {tmp_path / 'clip.mp4'} is not a folder"


# ---- output locations ---------------------------------------------------------------------------------------
def test_output_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "sub" / "clip.mp4"
    with pytest.raises(PatchworldError) as error:
        write_video(target, torch.zeros(3, 2, 16, 16))
    assert str(error.value) == f"cannot write {target}: {tmp_path / 'file'} is a file, not a folder"
    with pytest.raises(PatchworldError) as error:
        check_writable(target)
    assert str(error.value) == f"cannot write {target}: {tmp_path / 'file'} is a file, not a folder"
    assert _listing(tmp_path) == ["file"]


def test_output_path_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(PatchworldError) as error:
        check_writable(tmp_path / "out.json")
    assert str(error.value).startswith(f"cannot write {tmp_path / 'out.json'}: it is a directory")
    with pytest.raises(PatchworldError, match="Is a directory"):
        write_video(tmp_path / "out.json", torch.zeros(3, 2, 16, 16))
    assert _listing(tmp_path) == ["out.json"]  # no temp file left beside it


def test_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    with pytest.raises(PatchworldError) as error:
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(error.value) == f"cannot write {target}: No space left on device"
    assert _listing(tmp_path) == []


def test_check_writable_leaves_no_folder_it_made(tmp_path):
    target = tmp_path / "new" / "deeper" / "results.json"
    assert check_writable(target) == target
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("flag", ["--out", "--judge"])
def test_adherence_unwritable_output_fails_before_any_work(flag, run_cli, tmp_path, capsys, monkeypatch):
    import importlib

    adherence = importlib.import_module("patchworld_plugins.adherence")  # the package exports a function of that name
    def no_work(*args, **kwargs):
        raise AssertionError("adherence did work before checking its output location")

    monkeypatch.setattr(adherence, "load_world", no_work)
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "results.json"
    assert run_cli("adherence", "--config", "sora-tiny", flag, str(target)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"patchworld: error: cannot write {target}: {tmp_path / 'file'} is a file, not a folder"]
    assert _listing(tmp_path) == ["file"]
