"""World models that act: ActionWorld, the ActionConditioned objective and `patchworld plan`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from patchworld import WorldModel
from patchworld.data.actions import ActionWorld, Arena
from patchworld.data.video_io import probe_video, read_clip
from patchworld.evaluation.planning import (CEM, ExactDynamics, act_episode, plan_episode, random_policy,
                                            summarise)
from patchworld.testing import check_datamodule
from patchworld_plugins.action_conditioned import ActionConditioned, ActionPredictor
from patchworld_plugins.pixels import Pixels

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
TINY_ACT = ["--data.init_args.size", "[16, 16]", "--model.objective.init_args.frame_size", "[16, 16]",
            "--data.init_args.frames", "4", "--data.init_args.batch_size", "4", "--model.objective.init_args.dim", "32",
            "--model.objective.init_args.depth", "1", "--trainer.limit_val_batches", "1", *QUIET]


# ---- the world ----------------------------------------------------------------------------------------------
def test_action_world_batches_follow_their_actions_and_are_seeded():
    world = ActionWorld(frames=6, size=(24, 24), batch_size=4, train_size=8, val_size=4)
    batch = next(iter(world.train_dataloader()))
    assert batch["video"].shape == (4, 3, 6, 24, 24) and batch["actions"].shape == (4, 5, 2)
    assert batch["state"].shape == (4, 6, 2) and (batch["actions"].norm(dim=-1) <= 1 + 1e-6).all()
    arena = world.arena
    assert torch.allclose(arena.rollout(batch["state"][:, 0], batch["actions"]), batch["state"], atol=1e-6)
    assert torch.allclose(arena.locate(batch["video"]), batch["state"], atol=0.01)  # what is drawn is the state
    check_datamodule(lambda: ActionWorld(frames=4, size=(16, 16), batch_size=2, train_size=4, val_size=2, test_size=2,
                                         predict_size=2))


def test_directed_clips_head_for_a_goal():
    def travelled(prob: float) -> float:
        state = next(iter(ActionWorld(frames=8, batch_size=64, directed_prob=prob).train_dataloader()))["state"]
        return float((state[:, -1] - state[:, 0]).norm(dim=-1).mean())

    assert travelled(1.0) > 2 * travelled(0.0)  # straight pushes go far, a random walk does not


def test_walls_stop_the_agent():
    arena = Arena(radius=0.1, step_size=0.3)
    assert torch.allclose(arena.move(torch.tensor([0.15, 0.5]), torch.tensor([-5.0, 0.0])), torch.tensor([0.1, 0.5]))


# ---- the planner on the toy models --------------------------------------------------------------------------
def run_planner(use_actions: bool, episodes: int = 40) -> dict:
    arena, generator = Arena(), torch.Generator().manual_seed(0)
    runs = [plan_episode(ExactDynamics(arena, use_actions), arena, start, arena.render(goal[None]), goal,
                         CEM(samples=128, elites=16, iterations=3), 16, 2, generator)
            for start, goal in (arena.episode(0, index) for index in range(episodes))]
    return summarise(runs, tolerance=0.1)


def test_planner_with_exact_dynamics_reaches_the_goal():
    assert run_planner(use_actions=True)["success"]["value"] >= 0.95


def test_planner_with_an_action_blind_model_does_no_better_than_random():
    arena = Arena()
    random = summarise([act_episode(random_policy(arena, 0, index), arena, *arena.episode(0, index), 16)
                        for index in range(40)], tolerance=0.1)
    blind = run_planner(use_actions=False)
    assert blind["success"]["value"] <= random["success"]["value"] + 0.05
    assert blind["final_distance"] > 0.3  # it does not get near the goals


# ---- the objective ------------------------------------------------------------------------------------------
def held_out_loss(use_actions: bool, steps: int = 120) -> float:
    """Held-out teacher-forced loss of a tiny raw-pixel predictor after `steps` steps on 3-frame 16x16 clips."""
    torch.manual_seed(0)
    objective = ActionConditioned(frame_size=(16, 16), dim=64, depth=1, rollout_steps=1, use_actions=use_actions,
                                  pixel_patch=4)
    world = WorldModel(tokenizer=Pixels(), objective=objective)
    data = ActionWorld(frames=3, size=(16, 16), batch_size=16, step_size=0.2, train_size=16 * steps, val_size=32)
    optimizer = torch.optim.AdamW([p for p in world.parameters() if p.requires_grad], lr=3e-3)
    for batch in data.train_dataloader():
        loss = objective.training_step(world, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(np.mean([objective.validation_step(world, batch)["teacher_forcing"]
                              for batch in data.val_dataloader()]))


def test_the_actions_are_used():
    with_actions, blind = held_out_loss(True), held_out_loss(False)
    assert with_actions < 0.9 * blind, (with_actions, blind)


def test_the_cached_rollout_equals_feeding_predictions_back_in():
    torch.manual_seed(0)
    predictor = ActionPredictor(features=12, action_dim=2, dim=16, depth=2, heads=2)
    torch.nn.init.normal_(predictor.head.weight, std=0.1)  # a predictor that changes things
    places = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    start, actions = torch.randn(3, 4, 12), torch.randn(3, 5, 2)
    frames = start[:, None]  # (B, 1, n, D): each step re-runs the whole block-causal transformer
    for step in range(5):
        frames = torch.cat([frames, predictor(frames, actions[:, : step + 1], places)[:, -1:]], dim=1)
    assert torch.allclose(predictor.rollout(start, actions, places), frames[:, 1:], atol=1e-5)
    changed = actions.clone()
    changed[:, 3] += 1  # a later action changes nothing before it
    assert torch.equal(predictor.rollout(start, changed, places)[:, :3], predictor.rollout(start, actions, places)[:, :3])


def test_rollout_loss_and_its_steps_take_effect():
    world = WorldModel(tokenizer=Pixels(), objective=ActionConditioned(frame_size=(16, 16), dim=32, depth=1, rollout_steps=0))
    batch = next(iter(ActionWorld(frames=5, size=(16, 16), batch_size=2).train_dataloader()))
    assert "rollout" not in world.objective.training_step(world, batch)
    assert world.objective.embed(world, batch["video"]).shape == (2, 5, 4, 3 * 8 * 8)  # pixel_patch 8: 4 tokens
    patched = WorldModel(tokenizer=Pixels(), objective=ActionConditioned(frame_size=(16, 16), pixel_patch=4))
    assert patched.objective.embed(patched, batch["video"]).shape == (2, 5, 16, 3 * 4 * 4)
    world.objective.rollout_steps = 3
    torch.nn.init.normal_(world.objective.predictor.head.weight)  # a predictor that changes things
    out = world.objective.training_step(world, batch)
    assert torch.isclose(out["loss"], out["teacher_forcing"] + out["rollout"])
    world.objective.rollout_weight = 0.5
    out = world.objective.training_step(world, batch)
    assert torch.isclose(out["loss"], out["teacher_forcing"] + 0.5 * out["rollout"])


def test_a_recipe_backbone_is_a_frozen_random_init_encoder():
    from patchworld_plugins.vit import ViT

    world = WorldModel(tokenizer=Pixels(), backbone=ViT(dim=24, depth=1, heads=2, patch_size=(2, 8, 8)),
                       objective=ActionConditioned(frame_size=(16, 16), dim=32, depth=1))
    assert world.objective.image_frames == 2  # each image repeated over one tubelet
    assert not any(p.requires_grad for p in world.backbone.parameters())
    clip = next(iter(ActionWorld(frames=3, size=(16, 16), batch_size=2).train_dataloader()))["video"]
    assert world.objective.embed(world, clip).shape == (2, 3, 4, 24)  # 4 tokens of 24 per frame


# ---- through the command line --------------------------------------------------------------------------------
@pytest.fixture
def fails(run_cli, capsys):
    def run(*args) -> str:
        assert run_cli(*args) == 2
        lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("patchworld: error: "), lines
        return lines[0]

    return run


def test_cem_draws_and_keeps_what_it_is_told():
    seen = []
    cem = CEM(horizon=3, samples=10, elites=2, iterations=4)
    plan = cem.plan(lambda candidates: seen.append(candidates.shape) or candidates[:, -1, 0], 2, torch.Generator().manual_seed(0))
    assert seen == [(10, 3, 2)] * 4 and plan.shape == (3, 2)
    assert plan[-1, 0] < -0.5  # the cost favours pushing left at the last step


def test_plan_command_with_the_toy_model(run_cli, tmp_path, monkeypatch):
    plans = []
    original = CEM.plan
    monkeypatch.setattr(CEM, "plan", lambda self, *args: plans.append(self) or original(self, *args))
    assert run_cli("plan", "--dynamics", "exact", "--episodes", "6", "--steps", "14", "--videos", "2", "--samples",
                   "64", "--elites", "8", "--iterations", "2", "--baselines", "[random]", "--output", "out") == 0
    assert {(cem.samples, cem.elites, cem.iterations) for cem in plans} == {(64, 8, 2)}
    # --replan_every 2 (the default): 7 plans for 14 actions in each of 6 episodes, the last ones cut to the end
    assert [cem.horizon for cem in plans] == [6, 6, 6, 6, 6, 4, 2] * 6
    result = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert set(result["policies"]) == {"cem:exact", "random"}  # --baselines
    assert all(row["episodes"] == 6 for row in result["policies"].values())  # --episodes
    videos = sorted((tmp_path / "out" / "episodes").glob("*.mp4"))
    assert len(videos) == 2 and (probe_video(videos[0]).height, probe_video(videos[0]).width) == (128, 260)  # --videos
    assert read_clip(videos[0], None, (128, 260)).shape[1] == 15  # --steps: 14 actions, 15 frames (goal beside)
    assert (tmp_path / "out" / "trajectories.png").stat().st_size > 0 and "| cem:exact |" in (tmp_path / "out" / "plan.md").read_text()
    assert run_cli("plan", "--dynamics", "exact", "--episodes", "6", "--steps", "14", "--samples", "64", "--elites", "8",
                   "--iterations", "2", "--baselines", "[random]", "--tolerance", "2.0", "--output", "loose") == 0
    loose = json.loads((tmp_path / "loose" / "plan.json").read_text())["policies"]["random"]
    assert loose["success"]["value"] == 1.0 > result["policies"]["random"]["success"]["value"]  # --tolerance


def test_plan_toward_a_goal_image(run_cli, tmp_path):
    arena = Arena()
    goal = ((arena.render(torch.tensor([[0.7, 0.3]]))[:, 0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(goal).save(tmp_path / "goal.png")
    assert run_cli("plan", "--dynamics", "exact", "--goal", "goal.png", "--start", "[0.2, 0.8]", "--output", "one") == 0
    rows = json.loads((tmp_path / "one" / "plan.json").read_text())["policies"]
    assert rows["cem:exact"]["episodes"] == 1 and rows["cem:exact"]["success"]["value"] == 1.0
    assert rows["oracle"]["final_distance"] < 0.01  # the goal's position was read off the image
    episode = json.loads((tmp_path / "one" / "plan.json").read_text())["episodes"]["cem:exact"][0]
    assert episode["start"] == pytest.approx([0.2, 0.8]) and episode["goal"] == pytest.approx([0.7, 0.3], abs=0.01)


def test_train_then_plan_through_the_cli(run_cli, tmp_path):
    from patchworld.recipes import load_run

    assert run_cli("fit", "--config", "act-tiny", *TINY_ACT, "--trainer.max_steps", "2",
                   "--trainer.default_root_dir", "run") == 0
    assert run_cli("plan", "run", "--episodes", "2", "--steps", "4", "--horizon", "2", "--samples", "8", "--elites",
                   "2", "--iterations", "1", "--output", "planned") == 0
    world, _ = load_run(tmp_path / "run")
    assert world.objective.predictor.dim == 32 and len(world.objective.predictor.blocks.layers) == 1  # TINY_ACT
    rows = json.loads((tmp_path / "planned" / "plan.json").read_text())["policies"]
    assert set(rows) == {"cem:run", "random", "oracle"} and len(list((tmp_path / "planned" / "episodes").glob("*.mp4"))) == 2


def test_a_trained_encoder_is_loaded_frozen(run_cli, tmp_path):
    from patchworld.checkpoints import read_part
    from patchworld.recipes import load_run

    assert run_cli("fit", "--config", "vjepa-tiny", "--data", "ActionWorld", "--data.init_args.size", "[16, 16]",
                   "--data.init_args.frames", "4", "--data.init_args.batch_size", "2", "--model.backbone.init_args.dim",
                   "24", "--model.backbone.init_args.depth", "1", "--model.backbone.init_args.heads", "2",
                   "--model.backbone.init_args.patch_size", "[2, 8, 8]", "--trainer.max_steps", "2",
                   "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", "jepa", *QUIET) == 0
    assert run_cli("fit", "--config", "act-tiny", *TINY_ACT, "--model.objective.init_args.encoder", "jepa",
                   "--trainer.max_steps", "1", "--trainer.default_root_dir", "act") == 0
    world, _ = load_run(tmp_path / "act")
    target, _ = read_part(tmp_path / "jepa", "objective")
    loaded = world.objective.encoder.objective.target_encoder.state_dict()
    assert all(torch.equal(value, target[f"target_encoder.{key}"]) for key, value in loaded.items())
    assert world.objective.image_frames == 2


def test_bad_input_is_one_line(fails, tmp_path):
    assert "ActionConditioned.encoder: checkpoint 'nowhere.ckpt' does not exist" in fails(
        "fit", "--config", "act-tiny", *TINY_ACT, "--model.objective.init_args.encoder", "nowhere.ckpt")
    assert "actions have shape (4, 3, 2), expected (B, 3, 3)" in fails(
        "fit", "--config", "act-tiny", *TINY_ACT, "--model.objective.init_args.action_dim", "3",
        "--trainer.max_steps", "1", "--trainer.default_root_dir", "bad")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "big.png")
    assert "--goal 'big.png' has shape (3, 1, 48, 48); the world's frames are RGB 32x32" in fails(
        "plan", "--dynamics", "exact", "--goal", "big.png", "--start", "[0.5, 0.5]")
    assert "checkpoint 'nowhere' does not exist" in fails("plan", "nowhere")
    assert "unknown --dynamics 'perfect'" in fails("plan", "--dynamics", "perfect")
