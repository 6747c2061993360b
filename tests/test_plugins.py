"""The plugin system: every hook, duplicate refusal, broken plugins, and a pip-installed third-party plugin."""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning import LightningDataModule

import patchworld
from patchworld import ComponentError
from patchworld.plugins import KINDS, build_registry, load_plugins


def make_plugin(**hooks):
    """A plugin object implementing the given hooks (name -> return value)."""
    namespace = {}
    for hook, value in hooks.items():
        namespace[hook] = staticmethod(patchworld.hookimpl(lambda value=value: value))
    return type("Plugin", (), namespace)


class MyTokenizer(patchworld.Tokenizer):
    """A tokenizer."""


class MyBackbone(patchworld.Backbone):
    """A backbone."""


class MyObjective(patchworld.Objective):
    """An objective."""


class MyDecoder(patchworld.Decoder):
    """A decoder."""


class MyConditioner(patchworld.Conditioner):
    """A conditioner."""


class MyData(LightningDataModule):
    """A datamodule."""


def my_command(argv):
    """Says hello."""
    return 0


def test_every_register_hook_contributes_its_kind(tmp_path):
    (tmp_path / "extra.yaml").write_text("trainer: {}\n")
    plugin = make_plugin(
        patchworld_register_tokenizers=[MyTokenizer], patchworld_register_backbones=[MyBackbone],
        patchworld_register_objectives=[MyObjective], patchworld_register_decoders=[MyDecoder],
        patchworld_register_conditioners=[MyConditioner], patchworld_register_datamodules=[MyData],
        patchworld_register_recipe_dirs=[str(tmp_path)], patchworld_register_commands={"hello": my_command},
    )
    registry = build_registry({"mine": plugin})
    expected = {"tokenizer": MyTokenizer, "backbone": MyBackbone, "objective": MyObjective,
                "decoder": MyDecoder, "conditioner": MyConditioner, "datamodule": MyData}
    for kind, cls in expected.items():
        assert registry.components[kind] == {cls.__name__: (cls, "mine")}
        assert registry.get(kind, cls.__name__) is cls
    assert registry.recipes() == {"extra": (tmp_path / "extra.yaml", "mine")}
    assert registry.commands == {"hello": (my_command, "mine")}
    assert set(expected) == set(KINDS)


def test_unknown_name_lists_valid_names():
    registry = build_registry({"mine": make_plugin(patchworld_register_backbones=[MyBackbone])})
    with pytest.raises(ComponentError, match=r"unknown backbone 'Nope'; available backbones: MyBackbone"):
        registry.get("backbone", "Nope")


def test_duplicate_names_are_refused_naming_both_plugins():
    Clash = type("MyBackbone", (patchworld.Backbone,), {})
    plugins = {"first": make_plugin(patchworld_register_backbones=[MyBackbone]),
               "second": make_plugin(patchworld_register_backbones=[Clash])}
    with pytest.raises(ComponentError, match=r"'MyBackbone' is registered by two plugins: '(first|second)'.*'(second|first)'"):
        build_registry(plugins)
    with pytest.raises(ComponentError, match="command 'hello' is registered by two plugins"):
        build_registry({"a": make_plugin(patchworld_register_commands={"hello": my_command}),
                        "b": make_plugin(patchworld_register_commands={"hello": my_command})})
    with pytest.raises(ComponentError, match="command 'fit'"):
        build_registry({"a": make_plugin(patchworld_register_commands={"fit": my_command})})


def test_wrong_kind_is_refused_with_the_plugin_name():
    with pytest.raises(ComponentError, match=r"plugin 'bad' registered .*MyDecoder.* as a backbone"):
        build_registry({"bad": make_plugin(patchworld_register_backbones=[MyDecoder])})


def test_a_broken_hook_is_reported_and_the_others_keep_working():
    def explode():
        raise RuntimeError("boom")

    broken = type("Broken", (), {"patchworld_register_backbones": staticmethod(patchworld.hookimpl(explode))})
    with pytest.warns(UserWarning, match="'broken' skipped"):
        registry = build_registry({"broken": broken, "good": make_plugin(patchworld_register_objectives=[MyObjective])})
    assert "boom" in registry.failures["broken"]
    assert registry.names("objective") == ["MyObjective"]


def test_a_plugin_that_fails_to_import_is_reported_by_name(monkeypatch, capsys):
    real = [ep for ep in importlib.metadata.entry_points(group="patchworld") if ep.name == "patchworld_plugins"]
    missing = importlib.metadata.EntryPoint("ghost", "patchworld_ghost_not_installed", "patchworld")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [missing, *real])
    with pytest.warns(UserWarning, match="'ghost' could not be loaded"):
        registry = load_plugins.__wrapped__()
    assert "ModuleNotFoundError" in registry.failures["ghost"]
    assert "ViT" in registry.names("backbone")
    from patchworld.cli import show_plugins

    show_plugins(registry, [])
    assert "broken plugin 'ghost'" in capsys.readouterr().out


def test_first_party_plugin_lists_every_kind(run_cli, capsys):
    assert run_cli("plugins") == 0
    out = capsys.readouterr().out
    for heading, name in [("tokenizers:", "Pixels"), ("backbones:", "ViT"), ("objectives:", "VideoMAE"),
                          ("decoders:", "VideoWriter"), ("conditioners:", "TinyTextEncoder"),
                          ("datamodules:", "SyntheticWorld")]:
        assert heading in out and f"{name} " in out
    assert "[patchworld_plugins]" in out


def test_pip_installed_third_party_backbone_trains_from_its_own_recipe(tmp_path):
    """`pip install` the toy plugin package, then train its TokenMLP backbone through its shipped recipe."""
    target = tmp_path / "site"
    toy = Path(__file__).parent / "toy_plugin"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(toy)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "patchworld.cli", "plugins"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "TokenMLP" in listing and "[toy]" in listing
    fit = subprocess.run([sys.executable, "-m", "patchworld.cli", "fit", "--config", "toy-mae",
                          "--trainer.enable_progress_bar", "false"],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "max_steps=20" in fit.stderr + fit.stdout
