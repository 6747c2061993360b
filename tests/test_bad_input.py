"""Bad input through the `patchworld` command: recipes, values, checkpoints, prompts and output locations.

Every case runs the real command line in a fresh working directory and checks that it fails with exactly one
line `patchworld: error: ...` that names the file / key / component (no traceback, no usage dump), and that
nothing was left behind (no run directory, no half-written file).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
VIDEOMAE = str(RECIPES / "videomae-tiny.yaml")
TINY = ["--model.backbone.init_args.depth", "1", "--model.backbone.init_args.dim", "64", "--model.backbone.init_args.heads",
        "2", "--data.init_args.batch_size", "2", "--data.init_args.size", "[32, 32]", "--data.init_args.frames", "4",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny videomae-tiny run (its last.ckpt) and a 1-step vjepa-tiny run, shared by the cases."""
    from patchworld.cli import main

    root = tmp_path_factory.mktemp("trained")
    assert main(["fit", "--config", VIDEOMAE, *TINY, "--trainer.max_steps", "2",
                 f"--trainer.default_root_dir={root / 'mae'}"]) == 0
    assert main(["fit", "--config", "vjepa-tiny", *TINY, "--trainer.max_steps", "1",
                 f"--trainer.default_root_dir={root / 'jepa'}"]) == 0
    return {"mae": next((root / "mae").rglob("last.ckpt")), "jepa": next((root / "jepa").rglob("last.ckpt")),
            "root": root}


@pytest.fixture
def fails(run_cli, capsys, tmp_path):
    """Run a command that must fail; returns its one error line after checking nothing was left behind."""

    def run(*args, code: int = 2, keep: set[str] = frozenset()) -> str:
        before = listing(tmp_path)
        assert run_cli(*args) == code
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert "Traceback" not in err and "usage:" not in err, err
        assert lines and lines[-1].startswith("patchworld: error: "), err
        assert sum(line.startswith("patchworld: error") for line in lines) == 1, err
        assert listing(tmp_path) - before <= set(keep), f"left behind: {listing(tmp_path) - before - set(keep)}"
        return lines[-1].removeprefix("patchworld: error: ")

    return run


# ---- recipes ---------------------------------------------------------------------------------------------
def test_unknown_recipe_name(fails):
    line = fails("fit", "--config", "no-such-recipe")
    assert "recipe 'no-such-recipe' not found; shipped recipes:" in line and "videomae-tiny" in line


def test_empty_recipe(fails, tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert fails("fit", "--config", "empty.yaml", keep={"empty.yaml"}).startswith("recipe 'empty.yaml' is empty")


def test_yaml_syntax_error_names_file_and_line(fails, tmp_path):
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_steps: 3\nmodel: [1\n")
    line = fails("fit", "--config", "broken.yaml", keep={"broken.yaml"})
    assert line.startswith("recipe 'broken.yaml' is not valid YAML at line 4")


def test_recipe_that_is_a_list(fails, tmp_path):
    (tmp_path / "list.yaml").write_text("- trainer\n- model\n")
    assert "recipe 'list.yaml' must be a mapping of keys" in fails("fit", "--config", "list.yaml", keep={"list.yaml"})


def test_binary_recipe(fails, tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    assert "recipe 'binary.yaml' is not" in fails("fit", "--config", "binary.yaml", keep={"binary.yaml"})


def test_interpolation_to_a_missing_key_names_file_and_key(fails, tmp_path):
    (tmp_path / "interp.yaml").write_text("model:\n  warmup_steps: ${model.nope}\n")
    line = fails("fit", "--config", VIDEOMAE, "--config", "interp.yaml", keep={"interp.yaml"})
    assert line.startswith("recipe 'interp.yaml' at model.warmup_steps:") and "model.nope" in line


def test_recipe_that_is_a_directory(fails, tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    assert fails("fit", "--config", "folder.yaml", keep={"folder.yaml"}) == "recipe 'folder.yaml' is not a file"


# ---- values and components ------------------------------------------------------------------------------
def test_unknown_component_lists_valid_names(fails):
    line = fails("fit", "--config", VIDEOMAE, "--model.backbone", "Transformer9000")
    assert line == "unknown backbone 'Transformer9000' at model.backbone; available backbones: DiT, ViT"


def test_unknown_parameter_names_component_and_key(fails):
    line = fails("fit", "--config", VIDEOMAE, "--model.objective.init_args.mask_ratioo", "0.5")
    assert line.startswith("objective VideoMAE (at model.objective) has no parameter 'mask_ratioo'")


def test_value_of_the_wrong_type(fails):
    line = fails("fit", "--config", VIDEOMAE, "--model.objective.init_args.mask_ratio", "high")
    assert line == "VideoMAE (model.objective.mask_ratio): expected float, got high"


def test_value_out_of_range(fails):
    assert fails("fit", "--config", VIDEOMAE, "--model.objective.init_args.mask_ratio", "1.5") == \
        "VideoMAE.mask_ratio must be in (0, 1), got 1.5"


def test_size_with_one_number(fails):
    line = fails("fit", "--config", VIDEOMAE, "--data.init_args.size", "[64]")
    assert line == "SyntheticWorld (data.size): expected tuple with 2 elements, got [64]"


def test_heads_that_do_not_divide_dim(fails):
    assert fails("fit", "--config", VIDEOMAE, "--model.backbone.init_args.heads", "5") == \
        "ViT: dim 192 must be a multiple of heads 5 (each head gets dim/heads channels)"


def test_dit_heads_that_do_not_divide_dim(fails):
    assert fails("fit", "--config", "sora-tiny", "--model.backbone.init_args.heads", "3").startswith(
        "DiT: dim 128 must be a multiple of heads 3")


def test_predictor_heads_that_do_not_divide_its_width(fails):
    assert fails("fit", "--config", VIDEOMAE, "--model.objective.init_args.predictor_heads", "3").startswith(
        "predictor (predictor_dim, predictor_heads): dim 128 must be a multiple of heads 3")


def test_abbreviated_key_is_refused_with_a_suggestion(fails):
    assert fails("fit", "--config", VIDEOMAE, "--trainer.max_step", "1") == \
        "unrecognized arguments: --trainer.max_step 1 (did you mean --trainer.max_steps?)"


def test_missing_required_argument(fails):
    assert fails("fit", "--config", VIDEOMAE, "--data", "VideoFolder") == \
        "VideoFolder (data): the following arguments are required: root"


def test_error_raised_inside_a_datamodule(fails):
    assert fails("predict", "--config", "sora-tiny", "--data", "Prompts", "--data.prompts", '["a red circle"]',
                 "--data.task", "v2v").startswith("unknown task 'v2v'; valid tasks: t2v, i2v")


def test_context_frames_out_of_range(fails, make_mp4, tmp_path):
    make_mp4(tmp_path / "x.mp4", frames=8, height=32, width=32)
    line = fails("predict", "--config", "sora-tiny", "--data", "Prompts", "--data.prompts", '["a red circle"]',
                 "--data.frames", "8", "--data.task", "extend_forward", "--data.context_frames", "9",
                 "--data.condition", "[x.mp4]", keep={"x.mp4"})
    assert line.startswith("context_frames=9 is out of range for task 'extend_forward' on a 8-frame clip: give 1 to 7")


def test_negative_max_bad_steps(fails):
    assert fails("fit", "--config", VIDEOMAE, "--model.max_bad_steps", "-1") == \
        "WorldModel.max_bad_steps must be >= 0, got -1"


def test_lightning_refusal_is_one_line(fails):
    line = fails("fit", "--config", VIDEOMAE, "--trainer.max_steps", "-5", code=1)
    assert line.startswith("MisconfigurationException: `max_steps` must be a non-negative integer")


def test_prompt_file_that_does_not_exist(fails):
    assert fails("predict", "--config", "sora-tiny", "--data", "Prompts", "--data.prompt_file", "nope.txt") == \
        "prompt_file 'nope.txt' does not exist"


def test_no_prompts(fails):
    assert fails("predict", "--config", "sora-tiny", "--data", "Prompts").startswith("no prompts: give --data.prompts")


# ---- checkpoints -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["fit", "validate", "predict"])
def test_missing_checkpoint(fails, command):
    assert fails(command, "--config", VIDEOMAE, "--ckpt_path", "gone.ckpt") == "checkpoint 'gone.ckpt' does not exist"


def test_zero_byte_checkpoint(fails, tmp_path):
    (tmp_path / "zero.ckpt").write_bytes(b"")
    assert fails("validate", "--config", VIDEOMAE, "--ckpt_path", "zero.ckpt", keep={"zero.ckpt"}) == \
        "checkpoint 'zero.ckpt' is empty (0 bytes)"


def test_text_file_as_checkpoint(fails, tmp_path):
    (tmp_path / "notes.ckpt").write_text("my notes")
    assert fails("predict", "--config", VIDEOMAE, "--ckpt_path", "notes.ckpt", keep={"notes.ckpt"}).startswith(
        "checkpoint 'notes.ckpt' could not be read: not a torch checkpoint")


def test_truncated_checkpoint(fails, tmp_path, trained):
    data = trained["mae"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    assert fails("fit", "--config", VIDEOMAE, "--ckpt_path", "cut.ckpt", keep={"cut.ckpt"}).startswith(
        "checkpoint 'cut.ckpt' could not be read: truncated or corrupted")


def test_checkpoint_of_another_objective_is_refused(fails, trained):
    line = fails("fit", "--config", VIDEOMAE, *TINY, "--ckpt_path", trained["jepa"])
    assert f"checkpoint '{trained['jepa']}' does not fit recipe '{VIDEOMAE}': its objective is VJEPA, the " \
           f"recipe's is VideoMAE" in line
    assert f"--config {trained['jepa'].parent.parent / 'config.yaml'}" in line  # how to rebuild its own model


def test_checkpoint_with_other_shapes_is_refused(fails, trained):
    line = fails("validate", "--config", VIDEOMAE, *TINY[:6], "--model.backbone.init_args.dim", "32",
                 "--ckpt_path", trained["mae"])
    assert "does not fit recipe" in line and "has shape (64,) there, (32,) in the recipe's model" in line


def test_ckpt_path_last_without_runs(fails):
    assert fails("validate", "--config", VIDEOMAE, "--trainer.default_root_dir", "fresh", "--ckpt_path", "last") == \
        "no last.ckpt under 'fresh': train there first (patchworld fit), or give a checkpoint file"


def test_export_of_a_part_the_checkpoint_lacks(fails, trained):
    line = fails("export", str(trained["mae"]), "--part", "conditioner", "--output", "x.safetensors")
    assert line.endswith("has no 'conditioner' weights; the parts it holds: backbone, objective")


def test_export_to_a_non_safetensors_name(fails, trained):
    assert fails("export", str(trained["mae"]), "--output", "x.bin") == "--output 'x.bin' must end in .safetensors"


def test_export_unknown_option(fails, trained):
    assert fails("export", str(trained["mae"]), "--outptu", "x.safetensors").startswith("unrecognized arguments")


def test_corrupt_safetensors_for_a_vae(fails, tmp_path):
    (tmp_path / "vae.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    line = fails("fit", "--config", "sora-tiny-vae", "--model.tokenizer.init_args.checkpoint", "vae.safetensors",
                 keep={"vae.safetensors"})
    assert line.startswith("'vae.safetensors' is not a readable safetensors file")


# ---- untrusted checkpoints run nothing --------------------------------------------------------------------
class RunsAShellCommand:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "gift.ckpt"
    torch.save({"state_dict": {"tokenizer.x": torch.zeros(1)}, "payload": RunsAShellCommand(marker)}, path)
    yield path
    assert not marker.exists(), "the checkpoint's code ran"


REFUSED = "checkpoint '{}' refused: it holds code, not only weights (it asks for 'posix.system'); nothing from it was run"


@pytest.mark.parametrize("command", ["fit", "validate", "predict"])
def test_malicious_checkpoint_for_lightning_commands(fails, malicious, command):
    line = fails(command, "--config", VIDEOMAE, "--ckpt_path", malicious.name, keep={malicious.name})
    assert line.startswith(REFUSED.format(malicious.name))


def test_malicious_checkpoint_for_export(fails, malicious):
    assert fails("export", malicious.name, keep={malicious.name}).startswith(REFUSED.format(malicious.name))


def test_malicious_checkpoint_as_a_vae(fails, malicious):
    line = fails("fit", "--config", "sora-tiny-vae", "--model.tokenizer.init_args.checkpoint", malicious.name,
                 keep={malicious.name})
    assert line.startswith(REFUSED.format(malicious.name))


def test_malicious_checkpoint_for_probes(malicious, tmp_path):
    done = subprocess.run([sys.executable, "-m", "patchworld.evaluation.probes", "--config", VIDEOMAE, "--ckpt", str(malicious)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("patchworld: error: " + REFUSED.format(malicious))


def test_malicious_checkpoint_for_compare(fails, malicious, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"ceiling: null\nmodels:\n  - name: gift\n    checkpoint: {malicious}\n")  # no 80 s ceiling first
    line = fails("compare", "--config", "study.yaml", "--output", "out", keep={"study.yaml", malicious.name})
    assert line.startswith(f"models[gift].checkpoint '{malicious}' refused: it holds code")


# ---- output locations ---------------------------------------------------------------------------------
def test_run_directory_under_a_regular_file(fails, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    line = fails("fit", "--config", VIDEOMAE, *TINY, "--trainer.max_steps", "1", "--trainer.default_root_dir",
                 "blocker/run", keep={"blocker"})
    assert line == f"{tmp_path / 'blocker' / 'run'}: Not a directory"


def test_compare_output_under_a_regular_file_fails_before_any_work(fails, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "study.yaml").write_text("baselines:\n  - name: pixels\n    kind: pixels\n")
    line = fails("compare", "--config", "study.yaml", "--output", "blocker/out", keep={"blocker", "study.yaml"})
    assert line == "cannot write blocker/out/report.md: blocker is a file, not a folder"


def test_export_output_under_a_regular_file(fails, tmp_path, trained):
    (tmp_path / "blocker").write_text("a file, not a folder")
    line = fails("export", str(trained["mae"]), "--part", "backbone", "--output", "blocker/vit.safetensors",
                 keep={"blocker"})
    assert line.startswith("cannot write blocker/vit.safetensors")
