"""`patchworld judge`: distances between sets of clips in a frozen encoder's feature space."""
from __future__ import annotations

import json

import pytest
import torch

from patchworld import DataError
from patchworld.data.synthetic import SyntheticClips, collate
from patchworld.data.video_io import write_video
from patchworld_plugins.judge import DEGRADATIONS, degrade, distance_estimate, frechet_distance, polynomial_mmd


def features(n: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)) + shift


def test_distances_are_zero_for_identical_sets_and_grow_with_a_shift():
    a = features(64, 0.0, 0)
    assert polynomial_mmd(a, a) == 0.0
    assert frechet_distance(a, a) < 1e-6
    for distance in (polynomial_mmd, frechet_distance):
        values = [distance(a, features(64, shift, 1)) for shift in (0.0, 0.25, 0.5, 1.0)]
        assert values == sorted(values), (distance.__name__, values)
    same = distance_estimate("mmd", a, features(64, 0.0, 1), resamples=200)
    shifted = distance_estimate("mmd", a, features(64, 1.0, 1), resamples=200)
    assert same.low < 0 < same.high  # two samples of one distribution: 0 inside the interval
    assert shifted.low > same.high  # a shift of one standard deviation: resolved
    with pytest.raises(DataError, match="same size"):
        polynomial_mmd(a, a[:10])


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_each_degradation_grows_with_its_strength(kind):
    video = collate([SyntheticClips(4, "train", 8, (16, 16), max_objects=1, gravity_prob=0)[i] for i in range(4)])["video"]
    assert torch.equal(degrade(video, kind, 0.0), video)
    changes = [(degrade(video, kind, s) - video).abs().mean().item() for s in (0.25, 0.5, 1.0)]
    assert 0 < changes[0] <= changes[1] <= changes[2], changes
    with pytest.raises(DataError, match="valid: blur, colour, freeze, shuffle"):
        degrade(video, "noise", 0.5)


def test_judge_command_reads_folders_and_synthetic_clips(run_cli, recipe_path, tmp_path):
    """End to end with a random-init encoder: a set against itself is 0 (MMD) and ~0 (Fréchet); a folder of mp4s
    written from the same synthetic clips is read back nearer them than the clips recoloured by --degrade."""
    tiny = ["--data", recipe_path("vjepa-tiny")]
    clips = SyntheticClips(16, "test", 8, (48, 48))  # vjepa-tiny's data
    for i in range(16):
        write_video(tmp_path / "videos" / f"{i:02d}.mp4", clips[i]["video"])
    common = ["judge", "--config", recipe_path("vjepa-tiny"), *tiny, "--clips", "16", "--resamples", "20",
              "--precision", "32", "--real", "synthetic:test"]
    runs = {}
    for name, extra in {"same": ["--fake", "synthetic:test"], "folder": ["--fake", str(tmp_path / "videos")],
                        "recoloured": ["--fake", "synthetic:test", "--degrade", "colour:1"]}.items():
        assert run_cli(*common, *extra, "--out", f"{name}.json") == 0
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())["distances"]
    assert runs["same"]["mmd"]["value"] == 0 and runs["same"]["frechet"]["value"] < 1e-4
    assert set(runs["same"]["mmd"]["by_clips"]) == {"8", "16"}
    for distance in ("mmd", "frechet"):
        assert runs["folder"][distance]["value"] < runs["recoloured"][distance]["value"], (distance, runs)
    assert run_cli(*common, "--fake", "synthetic:nowhere") == 2
    assert run_cli(*common, "--fake", "synthetic:test", "--degrade", "blur") == 2
