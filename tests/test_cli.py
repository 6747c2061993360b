"""The patchworld command: every shipped recipe runs, recipes by name, errors for people, re-runs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
TRAINING_RECIPES = [path for path in RECIPES if "model" in (yaml.safe_load(path.read_text()) or {})]
FAST = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
# a real (non fast_dev_run) run of one step, which saves its config
ONE_STEP = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false"]


def test_there_are_recipes():
    assert any(path.stem == "videomae-tiny" for path in TRAINING_RECIPES)


def loads_a_trained_tokenizer(recipe: Path) -> bool:
    tokenizer = yaml.safe_load(recipe.read_text())["model"]["tokenizer"]
    return bool((tokenizer.get("init_args") or {}).get("checkpoint"))


@pytest.fixture(scope="module")
def tiny_vae_checkpoint(tmp_path_factory):
    """A real (one-step, tiny) vae-tiny checkpoint for the recipes that load a trained VAE."""
    from patchworld.cli import main

    root = tmp_path_factory.mktemp("vae")
    assert main(["fit", "--config", "vae-tiny", f"--trainer.default_root_dir={root}", "--trainer.max_steps=1",
                 "--model.tokenizer.init_args.width=8", "--data.init_args.size=[16, 16]", "--data.init_args.batch_size=2",
                 "--model.objective.init_args.crop=null", "--trainer.limit_val_batches=0", "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false"]) == 0
    return next(root.rglob("last.ckpt"))


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda path: path.stem)
def test_every_shipped_recipe_runs_fast_dev_run(recipe, run_cli, request):
    extra = []
    if loads_a_trained_tokenizer(recipe):  # e.g. sora-tiny-vae: point it at a real VAE checkpoint
        extra = ["--model.tokenizer.init_args.checkpoint", request.getfixturevalue("tiny_vae_checkpoint")]
    assert run_cli("fit", "--config", recipe, *FAST, *extra) == 0


def tiny_one_step(recipe: Path) -> list[str]:
    """Options that shrink a shipped recipe to a one-step fit of a tiny model (its parts and options kept)."""
    config = yaml.safe_load(recipe.read_text())
    model, data = config["model"], config["data"].get("init_args") or {}
    args = ["--trainer.max_steps", "1", "--trainer.max_time", "null", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--data.init_args.batch_size", "2"]
    if "backbone" in model:
        args += ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
                 "--model.backbone.init_args.heads", "2"]
    if model["tokenizer"]["class_path"] == "VAE" and not loads_a_trained_tokenizer(recipe):
        args += ["--model.tokenizer.init_args.width", "8", "--model.objective.init_args.crop", "null"]
    if "buckets" in data:  # one small bucket of the recipe's first duration
        args += ["--data.init_args.buckets", f"[[{data['buckets'][0][0]}, 32, 32]]", "--data.init_args.bucket_weights", "null"]
    else:
        args += ["--data.init_args.size", "[32, 32]"]
    return args


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda path: path.stem)
def test_every_shipped_recipe_trains_a_step_in_bf16(recipe, run_cli, request, monkeypatch, tmp_path):
    """The bf16 path (autocast, bf16 gradients, fused AdamW, clipping) that CPUs with native bf16 and GPUs take,
    forced on whatever CPU runs the suite (emulated where bf16 is not native: tiny sizes keep it to seconds)."""
    from patchworld.precision import cpu_bf16_is_fast

    monkeypatch.setenv("PATCHWORLD_CPU_BF16", "1")
    cpu_bf16_is_fast.cache_clear()
    request.addfinalizer(cpu_bf16_is_fast.cache_clear)
    extra = []
    if loads_a_trained_tokenizer(recipe):
        extra = ["--model.tokenizer.init_args.checkpoint", request.getfixturevalue("tiny_vae_checkpoint")]
    wanted = yaml.safe_load(recipe.read_text())["trainer"]["precision"]
    root = tmp_path / "run"
    assert run_cli("fit", "--config", recipe, *tiny_one_step(recipe), *extra, f"--trainer.default_root_dir={root}") == 0
    assert yaml.safe_load((root / "config.yaml").read_text())["trainer"]["precision"] == wanted  # not made fp32
    assert len(list(root.rglob("last.ckpt"))) == 1


def test_recipe_by_name_and_listing(run_cli, capsys):
    assert run_cli("recipes") == 0
    assert "videomae-tiny" in capsys.readouterr().out
    assert run_cli("fit", "--config", "videomae-tiny", *FAST) == 0


def test_unknown_recipe_lists_shipped_ones(run_cli, capsys):
    assert run_cli("fit", "--config", "no-such-recipe") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patchworld: error: recipe 'no-such-recipe' not found; shipped recipes:") and "videomae-tiny" in err


def _first_error_line(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("patchworld: error:")]  # exactly one
    return line


def test_unknown_component_lists_the_valid_names(run_cli, capsys, recipe_path):
    assert run_cli("fit", "--config", recipe_path("videomae-tiny"), "--model.backbone", "Transformer9000") != 0
    line = _first_error_line(capsys.readouterr().err)
    assert "unknown backbone 'Transformer9000' at model.backbone; available backbones:" in line and "ViT" in line


def test_unknown_key_names_the_key_and_the_component(run_cli, capsys, recipe_path, tmp_path):
    override = tmp_path / "bad.yaml"
    override.write_text("model:\n  objective:\n    class_path: VideoMAE\n    init_args: {mask_ratioo: 0.5}\n")
    assert run_cli("fit", "--config", recipe_path("videomae-tiny"), "--config", override) != 0
    line = _first_error_line(capsys.readouterr().err)
    assert "objective VideoMAE (at model.objective) has no parameter 'mask_ratioo'" in line


@pytest.mark.parametrize("recipe,key,value,line", [
    ("videomae-tiny", "mask_ratio", "1.5", "VideoMAE.mask_ratio must be in (0, 1), got 1.5"),
    ("vjepa-tiny", "ema", "[0.9, 1.5]", "VJEPA.ema momenta must lie in [0, 1], got (0.9, 1.5)"),  # was exit 1
])
def test_bad_value_is_one_line(recipe, key, value, line, run_cli, capsys, recipe_path):
    assert run_cli("fit", "--config", recipe_path(recipe), f"--model.objective.init_args.{key}", value) == 2
    assert _first_error_line(capsys.readouterr().err) == f"patchworld: error: {line}"


def test_refit_in_the_same_directory_overwrites_config(run_cli, recipe_path, tmp_path):
    args = ["fit", "--config", recipe_path("videomae-tiny"), *ONE_STEP, "--trainer.default_root_dir", tmp_path / "run"]
    assert run_cli(*args) == 0
    assert (tmp_path / "run" / "config.yaml").exists()
    assert run_cli(*args, "--model.warmup_steps", "7") == 0
    assert "warmup_steps: 7" in (tmp_path / "run" / "config.yaml").read_text()


def test_omegaconf_interpolation_in_recipes(run_cli, recipe_path, tmp_path):
    recipe = tmp_path / "interpolated.yaml"
    text = recipe_path("videomae-tiny").read_text()
    recipe.write_text(text.replace("predictor_dim: 128", "predictor_dim: '${model.backbone.init_args.dim}'"))
    args = ["fit", "--config", recipe, *ONE_STEP, "--trainer.default_root_dir", tmp_path]
    assert run_cli(*args) == 0
    assert "predictor_dim: 192" in (tmp_path / "config.yaml").read_text()


def every_command() -> list[str]:
    from patchworld.cli import COMMANDS
    from patchworld.plugins import load_plugins

    return ["fit", "validate", "test", "predict", *COMMANDS, *load_plugins().commands]


@pytest.mark.parametrize("command", every_command())
def test_every_command_prints_its_usage_on_help(command, run_cli, capsys):
    assert run_cli(command, "--help") == 0
    out = capsys.readouterr().out
    assert re.match(rf"usage: patchworld (\[options\] )?{command}\b", out.lstrip()), out[:300]


GENERATOR_RECIPES = [path for path in TRAINING_RECIPES if path.stem.startswith("sora")]


@pytest.mark.parametrize("recipe", GENERATOR_RECIPES, ids=lambda path: path.stem)
def test_every_task_works_with_its_defaults_on_every_generator_recipe(recipe, make_mp4, tmp_path, vae_checkpoint):
    """`predict --data Prompts --data.task TASK` with nothing else: the clip the recipe's data carries over
    (e.g. sora-tiny's 8 frames) and the task's default context (a loop on 8 frames takes 3, not 4)."""
    from patchworld.cli import PatchworldCLI, resolve_recipe_args
    from patchworld.plugins import load_plugins
    from patchworld_plugins.generation import TASKS
    from patchworld_plugins.prompts import Prompts

    clips = [str(make_mp4(tmp_path / f"clip{i}.mp4", frames=24, seed=i)) for i in range(2)]
    extra = ["--model.tokenizer.init_args.checkpoint", vae_checkpoint] if loads_a_trained_tokenizer(recipe) else []
    args = resolve_recipe_args(["--config", str(recipe), *extra, "--trainer.logger", "false", "--data",
                                "Prompts", "--data.prompts", '["a red circle moves right"]'], load_plugins())
    cli = PatchworldCLI(args=args, run=False)
    settings = cli.config.data.init_args.as_dict()
    assert cli.datamodule.frames == settings["frames"]
    for task, spec in TASKS.items():
        condition = clips[: min(spec.files)]
        batch = next(iter(Prompts(**(settings | {"task": task, "condition": condition})).predict_dataloader()))
        assert batch["video"].shape[2] == settings["frames"] and batch["task"] == task
        assert spec.files == (0,) or spec.strength is not None or batch["given"].any(), task


def test_fit_and_predict_print_no_warning_a_user_cannot_act_on(tmp_path):
    """A shipped recipe's fit and predict, run as a user runs them: no Python warning (Lightning's deprecations,
    its save-time `weights_only` note, the changed checkpoint folder, the batch sampler at predict) and a
    progress bar that counts the recipe's steps (Lightning's read "Epoch 1/-2")."""
    tiny = ["--model.backbone.init_args.depth", "1", "--model.backbone.init_args.dim", "32", "--model.backbone.init_args.heads",
            "2", "--data.init_args.batch_size", "2", "--data.init_args.size", "[32, 32]", "--data.init_args.frames", "4",
            "--data.init_args.train_size", "6", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
            "--data.init_args.predict_size", "2"]
    env = {**os.environ, "COLUMNS": "200"}
    runs = [subprocess.run([sys.executable, "-m", "patchworld.cli", command, "--config", "videomae-tiny", *tiny, *extra],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
            for command, extra in (("fit", ["--trainer.max_steps", "5"]), ("predict", ["--ckpt_path", "last"]))]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        noise = [line for line in run.stderr.splitlines() if re.search(r"\.py:\d+: |[Ww]arning|weights_only", line)]
        assert not noise, noise
    assert "/-2" not in runs[0].stdout and re.search(r"step: 5/5", runs[0].stdout), runs[0].stdout[-1000:]


def test_the_reserved_command_names_are_the_built_in_commands():
    from pytorch_lightning.cli import LightningCLI

    from patchworld.cli import COMMANDS
    from patchworld.plugins import RESERVED_COMMANDS

    assert set(RESERVED_COMMANDS) == set(LightningCLI.subcommands()) | set(COMMANDS)
