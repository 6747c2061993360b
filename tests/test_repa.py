"""REPA: a generator's hidden states aligned with a frozen world model's features (`patchworld_plugins.repa`)."""
from __future__ import annotations

import pytest
import torch

from patchworld import ComponentError, PatchworldError, WorldModel
from patchworld.checkpoints import find_last, read_part
from patchworld.recipes import load_run
from patchworld.data.synthetic import SyntheticClips, collate
from patchworld_plugins import DiT, Flow, Pixels, TinyTextEncoder
from patchworld_plugins.repa import Alignment

CLIP = ["--data.init_args.frames", "4", "--data.init_args.size", "[16, 16]"]
TINY_SORA = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
             "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder",
             "--model.conditioner.init_args.dim", "32", "--model.conditioner.init_args.depth", "1",
             "--trainer.precision", "32-true"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A one-step V-JEPA fit on the student's clip shape: a run directory with last.ckpt and config.yaml."""
    from patchworld.cli import main

    root = tmp_path_factory.mktemp("teacher")
    code = main(["fit", "--config", "vjepa-tiny", "--trainer.max_steps", "1", "--trainer.max_time", "null",
                 "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
                 "--trainer.precision", "32-true", "--data.init_args.batch_size", "2", *CLIP,
                 "--model.backbone.init_args.dim", "24", "--model.backbone.init_args.depth", "1",
                 "--model.backbone.init_args.heads", "2", "--trainer.default_root_dir", str(root)])
    assert code == 0
    return root


def student(repa: Alignment | None) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(Pixels(), Flow(progress=False, repa=repa), DiT(dim=32, depth=2, heads=2, patch_size=(1, 4, 4)),
                      TinyTextEncoder(dim=16, depth=1, heads=2))


def batch() -> dict:
    clips = SyntheticClips(2, "train", 4, (16, 16), max_objects=1, gravity_prob=0)
    return collate([clips[0], clips[1]]) | {"index": torch.arange(2)}


def test_repa_gradient_reaches_only_the_dit_and_its_projector(teacher_run):
    world = student(Alignment(str(teacher_run), depth=1, weight=0.5))
    teacher = world.objective.alignment.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trained, _ = read_part(teacher_run, "backbone")
    assert all(torch.equal(teacher.backbone.state_dict()[k], v) for k, v in trained.items())  # its trained weights
    assert not any(k.startswith("objective.alignment.teacher") for k in world.state_dict())  # not in the student
    assert any(k.startswith("objective.alignment.projector") for k in world.state_dict())

    world.train()
    out = world.objective.training_step(world, batch())
    assert float(out["loss"]) == pytest.approx(float(out["denoising_loss"] + 0.5 * out["repa_loss"]), rel=1e-6)
    assert 0 < float(out["repa_loss"]) <= 2
    out["repa_loss"].backward()
    reached = {name for name, p in world.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert all(name.startswith(("backbone.", "objective.alignment.projector.")) for name in reached), reached
    assert any(name.startswith("objective.alignment.projector.") for name in reached)
    assert any(name.startswith("backbone.patch_embed.") for name in reached)
    assert not any(name.startswith("backbone.blocks.1.") for name in reached)  # after the aligned block
    assert all(p.grad is None for p in teacher.parameters())

    optimizer = torch.optim.AdamW(world.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        world.objective.training_step(world, batch())["loss"].backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # bit-identical
    world.eval()
    with torch.no_grad():  # validation reports the denoising loss alone (same draws out of training)
        validation = world.objective.validation_step(world, batch())["loss"]
        assert float(validation) == pytest.approx(float(world.objective.training_step(world, batch())["denoising_loss"]))


def test_repa_takes_effect_keeps_the_student_seed_and_has_a_random_init_control(teacher_run):
    plain = student(None)
    aligned = student(Alignment(str(teacher_run)))
    control = student(Alignment(str(teacher_run), random_init=True))
    assert aligned.seed == plain.seed and torch.equal(aligned.backbone.blocks[0].mlp.fc1.weight,
                                                      plain.backbone.blocks[0].mlp.fc1.weight)
    trained = aligned.objective.alignment.teacher.backbone.state_dict()
    untrained = control.objective.alignment.teacher.backbone.state_dict()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)
    for world in (plain, aligned):
        world.train()
    assert "repa_loss" not in plain.objective.training_step(plain, batch())
    assert "repa_loss" in aligned.objective.training_step(aligned, batch())
    with pytest.raises(ComponentError, match="repa.depth 3 is out of range for a DiT of depth 2"):
        student(Alignment(str(teacher_run), depth=3))
    with pytest.raises(PatchworldError, match="no such run directory or checkpoint"):
        student(Alignment(str(teacher_run / "nowhere.ckpt")))


def test_fit_with_a_repa_teacher_from_the_command_line(run_cli, recipe_path, teacher_run, tmp_path):
    assert run_cli("fit", "--config", recipe_path("sora-tiny"), *TINY_SORA, *CLIP, "--trainer.max_steps", "2",
                   "--trainer.max_time", "null", "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "2",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", "run",
                   "--model.objective.init_args.repa.teacher", str(find_last(teacher_run)),
                   "--model.objective.init_args.repa.depth", "1") == 0
    world, _ = load_run(tmp_path / "run")  # the run rebuilt from its config.yaml: its teacher and depth took effect
    assert world.objective.alignment.depth == 1 and world.objective.alignment.teacher_dim == 24
    assert any(k.startswith("objective.alignment.projector") for k in torch.load(
        find_last(tmp_path / "run"), weights_only=True)["state_dict"])
    assert run_cli("fit", "--config", recipe_path("sora-tiny"), *TINY_SORA, *CLIP, "--trainer.max_steps", "1",
                   "--model.objective.init_args.repa.teacher", "nowhere") == 2
