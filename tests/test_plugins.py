"""The plugin system: every hook, safe loading (misspelt hooks, missing @hookimpl, duplicate names, wrong kinds,
broken and disabled plugins, clashing recipe names), and a pip-installed third-party plugin."""
import importlib.metadata
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
from pytorch_lightning import LightningDataModule

import patchworld
from patchworld import ComponentError, PatchworldError
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


class MyExpander(patchworld.interfaces.PromptExpander):
    """A prompt expander."""


class MyCaptioner(patchworld.interfaces.Captioner):
    """A captioner."""


class MyAdapter(patchworld.interfaces.Adapter):
    """An adapter."""


def my_command(argv):
    """Says hello."""
    return 0


def test_every_register_hook_contributes_its_kind(tmp_path):
    (tmp_path / "extra.yaml").write_text("trainer: {}\n")
    expected = {"tokenizer": MyTokenizer, "backbone": MyBackbone, "objective": MyObjective,
                "decoder": MyDecoder, "conditioner": MyConditioner, "datamodule": MyData,
                "prompt_expander": MyExpander, "captioner": MyCaptioner, "adapter": MyAdapter}
    plugin = make_plugin(patchworld_register_components=list(expected.values()),
                         patchworld_register_recipe_dirs=[str(tmp_path)],
                         patchworld_register_commands={"hello": my_command})
    registry = build_registry({"mine": plugin})
    for kind, cls in expected.items():
        assert registry.components[kind] == {cls.__name__: (cls, "mine")}
        assert registry.get(kind, cls.__name__) is cls
    assert registry.recipes() == {"extra": (tmp_path / "extra.yaml", "mine")}
    assert registry.commands == {"hello": (my_command, "mine")}
    assert set(expected) == set(KINDS)


def test_unknown_name_lists_valid_names():
    registry = build_registry({"mine": make_plugin(patchworld_register_components=[MyBackbone])})
    with pytest.raises(ComponentError, match=r"unknown backbone 'Nope'; available backbones: MyBackbone"):
        registry.get("backbone", "Nope")


def in_memory_module(name, **attributes):
    """A plugin module made in memory (what an entry point would import)."""
    module = types.ModuleType(name)
    vars(module).update(attributes)
    return module


def test_a_misspelt_hook_is_refused_naming_the_plugin():
    typo = in_memory_module("typo", patchworld_register_component=patchworld.hookimpl(lambda: [MyBackbone]),
                            patchworld_register_commands=patchworld.hookimpl(lambda: {"hello": my_command}))
    good = make_plugin(patchworld_register_components=[MyDecoder])
    with pytest.warns(UserWarning, match=r"plugin 'typo' skipped: .*unknown hook 'patchworld_register_component' "
                                         r"\(did you mean patchworld_register_components\?\)"):
        registry = build_registry({"typo": typo, "good": good})
    assert "unknown hook 'patchworld_register_component'" in registry.failures["typo"]
    assert registry.names("backbone") == [] and registry.commands == {}  # none of the plugin is used
    assert registry.names("decoder") == ["MyDecoder"]


def test_a_hook_function_without_hookimpl_is_a_warning_naming_plugin_and_function():
    def patchworld_register_components():
        return [MyBackbone]

    def patchworld_register_component():
        return [MyBackbone]

    plain = in_memory_module("plain", patchworld_register_components=patchworld_register_components,
                             patchworld_register_component=patchworld_register_component,
                             patchworld_register_commands=patchworld.hookimpl(lambda: {"hello": my_command}))
    with pytest.warns(UserWarning) as caught:
        registry = build_registry({"plain": plain})
    messages = [str(w.message) for w in caught]
    assert ("patchworld plugin 'plain': function patchworld_register_components is not decorated with "
            "@patchworld.hookimpl, so patchworld ignores it") in messages
    assert any("function patchworld_register_component is not a hook (did you mean patchworld_register_components?)"
               in m for m in messages)
    assert registry.names("backbone") == [] and list(registry.commands) == ["hello"]  # only a warning
    assert "plain" not in registry.failures


def test_a_duplicate_name_disables_the_second_plugin_only(monkeypatch, run_cli, capsys, tmp_path):
    from patchworld import cli

    Clash = type("MyBackbone", (patchworld.Backbone,), {"__module__": "clash"})
    (tmp_path / "second.yaml").write_text("trainer: {}\n")
    plugins = {
        "first": make_plugin(patchworld_register_components=[MyBackbone]),
        "second": make_plugin(patchworld_register_components=[Clash, MyObjective],
                              patchworld_register_recipe_dirs=[str(tmp_path)],
                              patchworld_register_commands={"hello": my_command}),
        "other": make_plugin(patchworld_register_components=[MyDecoder]),
    }
    with pytest.warns(UserWarning, match=r"plugin 'second' skipped: backbone 'MyBackbone' \(clash\) is already "
                                         r"registered by plugin 'first' \(test_plugins\)") as caught:
        registry = build_registry(plugins)
    assert len([w for w in caught if "'second'" in str(w.message)]) == 1  # warned once
    assert registry.components["backbone"] == {"MyBackbone": (MyBackbone, "first")}
    assert registry.names("decoder") == ["MyDecoder"]  # the other plugins keep working
    # nothing of the offender is used, not even its parts that did not clash
    assert registry.names("objective") == [] and registry.commands == {} and registry.recipes() == {}
    assert "already registered by plugin 'first'" in registry.failures["second"]

    monkeypatch.setattr(cli, "load_plugins", lambda: registry)
    assert run_cli("plugins") == 0
    out = capsys.readouterr().out
    assert "MyBackbone         [first]" in out and "MyDecoder          [other]" in out
    assert "broken plugin 'second' (none of it is used): backbone 'MyBackbone'" in out
    assert run_cli("--help") == 0
    assert "usage: patchworld COMMAND" in capsys.readouterr().out


def test_the_first_party_plugin_always_keeps_its_names():
    Intruder = type("MyBackbone", (patchworld.Backbone,), {"__module__": "intruder"})
    plugins = {"intruder": make_plugin(patchworld_register_components=[Intruder]),  # loaded first, still loses
               "patchworld_plugins": make_plugin(patchworld_register_components=[MyBackbone])}
    with pytest.warns(UserWarning, match="plugin 'intruder' skipped: .*already registered by plugin 'patchworld_plugins'"):
        registry = build_registry(plugins)
    assert registry.components["backbone"] == {"MyBackbone": (MyBackbone, "patchworld_plugins")}
    assert list(registry.failures) == ["intruder"]


def test_clashing_commands_disable_the_second_plugin():
    with pytest.warns(UserWarning, match="plugin 'b' skipped: command 'hello' is already registered by plugin 'a'"):
        registry = build_registry({"a": make_plugin(patchworld_register_commands={"hello": my_command}),
                                   "b": make_plugin(patchworld_register_commands={"hello": my_command, "bye": my_command},
                                                    patchworld_register_components=[MyBackbone])})
    assert registry.commands == {"hello": (my_command, "a")} and registry.names("backbone") == []
    for builtin in ("fit", "new"):
        with pytest.warns(UserWarning, match=f"plugin 'a' skipped: command '{builtin}' is a built-in patchworld command"):
            registry = build_registry({"a": make_plugin(patchworld_register_commands={builtin: my_command})})
        assert "built-in" in registry.failures["a"] and registry.commands == {}


def test_a_wrong_kind_disables_the_plugin_naming_it(monkeypatch, run_cli, capsys):
    from patchworld import cli

    NotAComponent = type("NotAComponent", (), {})
    bad = make_plugin(patchworld_register_components=[MyObjective, NotAComponent])
    with pytest.warns(UserWarning, match=r"plugin 'bad' skipped: patchworld_register_components returned "
                                         r".*NotAComponent.*, which is no component class \(a subclass of one of "
                                         r"Tokenizer, Backbone, .*Adapter\)"):
        registry = build_registry({"bad": bad, "good": make_plugin(patchworld_register_components=[MyTokenizer])})
    assert "no component class" in registry.failures["bad"]
    assert registry.names("backbone") == [] and registry.names("objective") == []
    assert registry.names("tokenizer") == ["MyTokenizer"]
    monkeypatch.setattr(cli, "load_plugins", lambda: registry)
    assert run_cli("plugins") == 0 and run_cli("--help") == 0
    out = capsys.readouterr().out
    assert "MyTokenizer        [good]" in out and "broken plugin 'bad' (none of it is used)" in out
    assert "usage: patchworld COMMAND" in out
    with pytest.warns(UserWarning, match="hook patchworld_register_components must return a list of classes, got type"):
        build_registry({"single": make_plugin(patchworld_register_components=MyBackbone)})


def test_a_broken_hook_is_reported_and_the_others_keep_working():
    def explode():
        raise RuntimeError("boom")

    broken = type("Broken", (), {"patchworld_register_components": staticmethod(patchworld.hookimpl(explode)),
                                 "patchworld_register_commands": staticmethod(patchworld.hookimpl(lambda: {"hi": my_command}))})
    with pytest.warns(UserWarning, match="'broken' skipped: hook patchworld_register_components failed: RuntimeError: boom"):
        registry = build_registry({"broken": broken, "good": make_plugin(patchworld_register_components=[MyObjective])})
    assert "boom" in registry.failures["broken"]
    assert registry.names("objective") == ["MyObjective"] and registry.commands == {}


def test_a_plugin_written_against_the_old_per_kind_hooks_still_loads_and_is_told_the_new_hook():
    old = make_plugin(patchworld_register_backbones=[MyBackbone], patchworld_register_decoders=[MyDecoder])
    with pytest.warns(FutureWarning, match="patchworld plugin 'old': patchworld_register_backbones is deprecated; "
                                           "return its classes from patchworld_register_components"):
        registry = build_registry({"old": old})
    assert registry.components["backbone"] == {"MyBackbone": (MyBackbone, "old")}
    assert registry.components["decoder"] == {"MyDecoder": (MyDecoder, "old")} and registry.failures == {}
    # an old hook still names the kind it promises: a class of another kind breaks the plugin, in one line
    with pytest.warns(UserWarning, match=r"plugin 'mixed' skipped: patchworld_register_backbones returned "
                                         r".*MyDecoder.* as a backbone, but it is not a Backbone subclass"):
        registry = build_registry({"mixed": make_plugin(patchworld_register_backbones=[MyDecoder])})
    assert registry.names("decoder") == []


def test_a_disabled_plugin_is_not_imported_and_is_listed(monkeypatch, capsys):
    real = [ep for ep in importlib.metadata.entry_points(group="patchworld") if ep.name == "patchworld_plugins"]
    missing = importlib.metadata.EntryPoint("ghost", "patchworld_ghost_not_installed", "patchworld")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [missing, *real])
    monkeypatch.setenv("PATCHWORLD_DISABLE_PLUGINS", " ghost, nothere ")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # importing ghost would warn (and fail)
        registry = load_plugins.__wrapped__()
    assert "ghost" not in registry.failures  # never imported
    assert registry.disabled == {
        "ghost": "disabled by PATCHWORLD_DISABLE_PLUGINS (not imported)",
        "nothere": "named in PATCHWORLD_DISABLE_PLUGINS, but no plugin of that name is installed"}
    assert "ViT" in registry.names("backbone")
    from patchworld.cli import show_plugins

    show_plugins(registry, [])
    out = capsys.readouterr().out
    assert "disabled plugin 'ghost': disabled by PATCHWORLD_DISABLE_PLUGINS (not imported)" in out
    assert "disabled plugin 'nothere': named in PATCHWORLD_DISABLE_PLUGINS, but no plugin" in out


def test_a_plugin_recipe_with_a_shipped_name_is_namespaced_not_shadowing(tmp_path, capsys):
    from patchworld.cli import resolve_recipe_args, show_recipes

    shipped, theirs = tmp_path / "shipped", tmp_path / "theirs"
    for folder in (shipped, theirs):
        folder.mkdir()
        (folder / "sora-tiny.yaml").write_text("trainer: {}\n")
    (theirs / "own.yaml").write_text("trainer: {}\n")
    registry = build_registry({"toy": make_plugin(patchworld_register_recipe_dirs=[str(theirs)]),  # loaded first
                               "patchworld_plugins": make_plugin(patchworld_register_recipe_dirs=[str(shipped)])})
    assert registry.recipes() == {"sora-tiny": (shipped / "sora-tiny.yaml", "patchworld_plugins"),
                                  "toy:sora-tiny": (theirs / "sora-tiny.yaml", "toy"),
                                  "own": (theirs / "own.yaml", "toy")}
    assert resolve_recipe_args(["fit", "--config", "sora-tiny"], registry)[2] == str(shipped / "sora-tiny.yaml")
    assert resolve_recipe_args(["fit", "--config", "toy:sora-tiny"], registry)[2] == str(theirs / "sora-tiny.yaml")
    assert resolve_recipe_args(["fit", "--config=toy:own.yaml"], registry)[1] == f"--config={theirs / 'own.yaml'}"
    with pytest.raises(PatchworldError, match="recipe 'toy:nope' not found; shipped recipes: own, sora-tiny, toy:sora-tiny"):
        resolve_recipe_args(["fit", "--config", "toy:nope"], registry)
    show_recipes(registry, [])
    out = capsys.readouterr().out
    assert "sora-tiny              [patchworld_plugins]" in out
    assert "(a plugin recipe of this name is listed as toy:sora-tiny)" in out
    assert ("toy:sora-tiny          [toy]" in out
            and "(plugin 'patchworld_plugins' has a recipe 'sora-tiny' too; use --config toy:sora-tiny)" in out)


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


def test_the_hook_reference_in_the_docs_is_rendered_from_the_hookspecs():
    """docs/plugins.md's hook reference is framework/hookspecs.py's docstrings, rendered (one source of truth)."""
    from patchworld.hookspecs import with_reference
    from patchworld.plugins import HOOK_NAMES

    text = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    assert with_reference(text) == text, ("docs/plugins.md's hook reference is stale: run "
                                          "python -c 'from patchworld.hookspecs import update_reference; update_reference()'")
    assert all(f"### `{hook}()" in text for hook in HOOK_NAMES)
