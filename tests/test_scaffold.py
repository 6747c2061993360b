"""`patchworld new plugin`: the package it makes installs, passes its own tests (patchworld.testing) and trains
and predicts from its recipe, for every kind; bad names and existing folders are refused in one line."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import sys

import pytest

from patchworld.plugins import load_plugins
from patchworld.scaffold import SCAFFOLDS


def test_a_new_backbone_plugin_installs_passes_its_own_tests_and_trains(run_cli, tmp_path, capsys):
    """The issue's acceptance: make it, pip-install it, run its tests, train it from its recipe by name."""
    assert run_cli("new", "plugin", "conv-mixer", "--kind", "backbone") == 0  # a hyphenated distribution name
    assert "next:  pip install -e conv-mixer" in capsys.readouterr().out
    package = tmp_path / "conv-mixer"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md", "conv_mixer/__init__.py", "conv_mixer/backbone.py", "conv_mixer/recipes/conv-mixer.yaml",
        "pyproject.toml", "tests/test_conv_mixer.py"]
    assert 'name = "conv-mixer"' in (package / "pyproject.toml").read_text()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)], env=env,
                           cwd=tmp_path, capture_output=True, text=True)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout[-3000:]
    fit = subprocess.run([sys.executable, "-m", "patchworld.cli", "fit", "--config", "conv-mixer",  # by name, beside
                          "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false"],  # its own folder
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=3` reached" in fit.stderr + fit.stdout
    assert list((tmp_path / "runs" / "conv-mixer").rglob("last.ckpt"))


@pytest.mark.parametrize("kind", sorted(set(SCAFFOLDS) - {"backbone"}))
def test_every_kind_makes_a_plugin_whose_own_tests_pass(kind, run_cli, tmp_path, monkeypatch):
    """The package's own tests (its conformance check, --help, the recipe trains 2 steps and predicts), run
    in this process from the package folder."""
    name = f"kit_{kind}"
    assert run_cli("new", "plugin", name, "--kind", kind) == 0
    monkeypatch.syspath_prepend(str(tmp_path / name))
    installed = [*importlib.metadata.entry_points(group="patchworld"), importlib.metadata.EntryPoint(name, name, "patchworld")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: installed)  # as `pip install -e` would
    load_plugins.cache_clear()  # the recipe names its class through the registry of installed plugins
    spec = importlib.util.spec_from_file_location(f"test_{name}", tmp_path / name / "tests" / f"test_{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        tests = {test: function for test, function in vars(module).items() if test.startswith("test_")}
        assert set(tests) == {f"test_{kind}_contract", "test_docstring_fills_help",
                              "test_the_recipe_trains_and_predicts"}
        for function in tests.values():
            function(**({"tmp_path": tmp_path / "run"} if "tmp_path" in inspect.signature(function).parameters else {}))
    finally:  # forget the package
        load_plugins.cache_clear()
        for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[loaded]


@pytest.mark.parametrize("args,error", [
    (["plugin", "Conv-Mixer"], "plugin name 'Conv-Mixer' is not a valid package name: use lowercase letters, digits, "
                               "hyphens and underscores, starting with a letter (e.g. conv-mixer; its import name is "
                               "conv_mixer)"),
    (["plugin", "conv--mixer"], "plugin name 'conv--mixer' is not a valid package name"),
    (["plugin", "class"], "plugin name 'class' is not a valid package name"),
    (["plugin", "torch"], "plugin name 'torch' is taken: a module 'torch' is already importable"),
    (["plugin", "pytorch-lightning"], "plugin name 'pytorch-lightning' is taken: a module 'pytorch_lightning' is"),
    (["plugin", "vi_t"], "plugin name 'vi_t' would define the backbone ViT, which plugin 'patchworld_plugins' "
                         "already registers; choose another name"),
    (["plugin", "taken"], "taken already exists; choose another name or --directory"),
    (["plugin", "fine", "--kind", "sampler"], "kind: expected typing.Literal['backbone', 'tokenizer'"),
    (["project", "fine"], "what: expected typing.Literal['plugin'], got project"),
])
def test_new_plugin_refuses_in_one_line_and_writes_nothing(args, error, run_cli, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert run_cli("new", *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"patchworld: error: {error}"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

