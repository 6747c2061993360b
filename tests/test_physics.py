"""Intuitive physics on matched sets: predictive surprise per objective, relative scoring, the layer search and
`patchworld physics` through the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from patchworld import WorldModel
from patchworld.data.matched import matched_sets, write_matched_folder
from patchworld.evaluation.physics import PhysicsRun, PhysicsSpec
from patchworld_plugins.dit import DiT
from patchworld_plugins.flow import Flow
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.videomae import VideoMAE
from patchworld_plugins.vit import ViT
from patchworld_plugins.vjepa import VJEPA

SPEC = PhysicsSpec(sets=6, frames=8, size=(24, 24), context=4, resamples=400)


class Oracle(nn.Module):
    """Knows which clips are impossible: surprise 1 on the predicted frames of those, 0 elsewhere."""

    def __init__(self, sets):
        super().__init__()
        self.impossible = {s.videos[k].numpy().tobytes(): bool(s.impossible[k]) for s in sets for k in range(len(s.videos))}

    def surprise(self, video, context):
        flags = torch.tensor([float(self.impossible[v.numpy().tobytes()]) for v in video])
        curve = flags[:, None].repeat(1, video.shape[2])
        curve[:, :context] = float("nan")
        return curve


class Brightness(nn.Module):
    """Surprise = how bright each frame is: pixel content, blind to the order of events."""

    def surprise(self, video, context):
        curve = video.float().mean(dim=(1, 3, 4))  # (B, T)
        curve[:, :context] = float("nan")
        return curve


def test_the_true_violation_scores_perfectly_and_pixel_content_scores_chance():
    run = PhysicsRun(SPEC)
    truth = run.add("oracle", Oracle(run.sets))["scores"]
    for group in truth.values():
        for how in ("max", "mean"):
            assert group[how]["relative_accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
            assert group[how]["auroc"]["value"] == 1.0
    content = run.add("brightness", Brightness())["scores"]
    # every frame appears once among the possible and once among the impossible clips of a set, so a score that
    # adds up per-frame content wins exactly half of the (impossible, possible) comparisons in every set
    for violation, group in content.items():
        assert group["mean"]["relative_accuracy"]["value"] == pytest.approx(0.5, abs=1e-9), violation
    # the max over time is not additive: ties with the shared frames leave it near, not exactly at, chance
    assert content["overall"]["max"]["relative_accuracy"]["value"] == pytest.approx(0.5, abs=0.1)
    results = run.results([("oracle", "brightness")])
    (difference,) = results["differences"]
    expected = 1.0 - content["overall"]["max"]["relative_accuracy"]["value"]
    assert difference["value"] == pytest.approx(expected) and difference["label"] == "resolved"


def tiny(objective, backbone=None):
    torch.manual_seed(0)
    return WorldModel(Pixels(), objective, backbone=backbone or ViT(dim=32, depth=2, heads=2, patch_size=(2, 8, 8)))


@pytest.mark.parametrize("make", [
    lambda: tiny(VJEPA(predictor_dim=16, predictor_depth=1, predictor_heads=2)),
    lambda: tiny(VideoMAE(predictor_dim=16, predictor_depth=1, predictor_heads=2)),
    lambda: tiny(Flow(), DiT(dim=32, depth=2, heads=2, patch_size=(2, 8, 8))),
], ids=["vjepa", "videomae", "flow"])
def test_every_objective_predicts_the_future_from_the_past_only(make):
    world = make().eval()
    video = torch.rand(3, 3, 8, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        curve = world.surprise(video, context=4)
        assert curve.shape == (3, 8) and curve[:, :4].isnan().all() and (curve[:, 4:] >= 0).all()
        alone = world.surprise(video[2:], context=4)
        torch.testing.assert_close(alone[0, 4:], curve[2, 4:], atol=1e-4, rtol=1e-3)  # no batch dependence
        later = video.clone()
        later[:, :, 7] = -later[:, :, 7]  # only the last step's target changes
        changed = world.surprise(later, context=4)
    torch.testing.assert_close(changed[:, 4:6], curve[:, 4:6])
    assert not torch.allclose(changed[:, 6:], curve[:, 6:])


def test_the_layer_search_finds_the_informative_layer(tmp_path):
    """A hand-built three-layer stack: only depth 2 carries the clip (so its colour); 1 and 3 are noise."""
    from patchworld.evaluation.study import DataSpec, ModelSpec, ProbeSpec, Study

    class Options:
        def feature_options(self, world):
            return {"depth": [1, 2, 3]}

    class Stack(nn.Module):
        objective = Options()

        def features(self, video, depth=3):
            tokens = video.float().amax(dim=(3, 4)).transpose(1, 2)  # (B, T, 3): the one object's colour per frame
            if depth != 2:
                tokens = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(depth))
            return tokens, torch.zeros(*tokens.shape[:2], 3, dtype=torch.long)

    study = Study([], [], DataSpec(frames=4, size=(16, 16), probe_train=96, probe_val=48, probe_test=48, max_objects=1),
                  ProbeSpec(lrs=[3e-2], weight_decays=[1e-4], steps=80, seeds=1, fractions=[1.0]), None, tmp_path,
                  tasks={"appearance": ["colour"]}, progress=False)

    class Bar:
        def set_postfix_str(self, _):
            pass

    chosen, default, search = study.choose_features(Stack(), 4, ModelSpec("stack"), Bar())
    assert search["chosen"] == {"depth": 2}
    scores = {g["depth"]: g["val_accuracy"] for g in search["grid"]}
    assert scores[2] > max(scores[1], scores[3]) + 0.2
    assert chosen is not default


TINY_RECIPE = """
seed_everything: 0
trainer: {max_steps: 2, precision: 32-true, logger: false, enable_checkpointing: false}
model:
  tokenizer: {class_path: Pixels}
  backbone: {class_path: ViT, init_args: {dim: 32, depth: 1, heads: 2, patch_size: [2, 8, 8]}}
  objective: {class_path: VJEPA, init_args: {predictor_dim: 16, predictor_depth: 1, predictor_heads: 2}}
  decoder: {class_path: EmbeddingWriter}
data: {class_path: SyntheticWorld, init_args: {frames: 4, size: [16, 16], batch_size: 4}}
"""
FLAGS = ["--physics.sets", "2", "--physics.frames", "8", "--physics.size", "[24, 24]", "--physics.resamples", "100",
         "--physics.violations", "[permanence, gravity]", "--progress", "false"]


def test_physics_command_on_a_recipe_and_on_your_own_matched_clips(run_cli, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    assert run_cli("physics", "--config", "tiny.yaml", "--output", "out", *FLAGS) == 0
    for name in ("physics.md", "physics.json", "physics-curves.png", "physics-accuracy.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "out" / "physics.json").read_text())
    assert set(results["models"]) == {"tiny (random init)", "pixels (copy last frame)"}
    model = results["models"]["tiny (random init)"]
    assert set(model["scores"]) == {"permanence", "gravity", "overall"} and model["scores"]["overall"]["sets"] == 4
    assert results["spec"]["sets"] == 2 and results["spec"]["resamples"] == 100
    example = model["examples"]["gravity"]
    assert len(example["curves"]) == 4 and example["curves"][0][:4] == [None] * 4 and example["event_frame"] == 4
    # your own clips, in the folder layout (here: rendered sets written out as mp4)
    write_matched_folder(matched_sets(["colour"], 2, 8, (24, 24), seed=3), tmp_path / "mine")
    assert run_cli("physics", "--config", "tiny.yaml", "--output", "own", "--physics.folder", "mine", *FLAGS) == 0
    own = json.loads((tmp_path / "own" / "physics.json").read_text())
    assert own["models"]["tiny (random init)"]["scores"]["overall"]["sets"] == 2


def test_physics_bad_input_is_one_line_naming_the_set_or_model(run_cli, tmp_path, capsys, recipe_path):
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    write_matched_folder(matched_sets(["shape"], 1, 8, (24, 24)), tmp_path / "mine")
    twin = next((tmp_path / "mine").rglob("impossible/*.mp4"))
    twin.unlink()
    assert run_cli("physics", "--config", "tiny.yaml", "--physics.folder", "mine", *FLAGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shape-000" in err[0], err
    assert run_cli("physics", "--config", str(recipe_path("vae-tiny")), *FLAGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vae-tiny" in err[0] and "no predictive surprise" in err[0], err
    assert run_cli("physics", "--config", "tiny.yaml", "--physics.violations", "[levitation]") == 2
    assert "levitation" in capsys.readouterr().err
