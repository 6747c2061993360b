"""The patchworld plugin hooks. These docstrings are the plugin API reference.

A plugin is an importable module (or package) named in the ``patchworld`` entry-point group::

    # pyproject.toml of your plugin
    [project.entry-points.patchworld]
    my_plugin = "my_plugin"

It implements any of the hooks below with ``@patchworld.hookimpl``: ``patchworld_register_components`` returns
its component classes (each one's kind read from the interface it subclasses), the others its recipe folders
and commands; patchworld merges what all plugins return. A plugin that fails to import, whose hook
raises, that implements a hook not defined here (a misspelt name), returns a class of the wrong kind, or
registers a component or command name another plugin already has is skipped as a whole (the plugin
merged second is the offender; the first-party plugin always keeps its names), reported by name with one
warning and by ``patchworld plugins``, while the others keep working. A ``patchworld_*`` function without
``@patchworld.hookimpl`` is ignored with a warning. A component's name is its class name, which is also
the short name recipes use (``class_path: ViT``). The first-party components are registered through these
same hooks by the ``patchworld_plugins`` package. ``PATCHWORLD_DISABLE_PLUGINS=name1,name2`` (entry-point
names) stops plugins from being imported at all.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pluggy

hookspec = pluggy.HookspecMarker("patchworld")
hookimpl = pluggy.HookimplMarker("patchworld")

#: the lines around docs/plugins.md's hook reference, which `with_reference` renders from this module
BEGIN = ("<!-- the hook reference, rendered from framework/hookspecs.py by patchworld.hookspecs.update_reference(); "
         "edit the hookspecs, not this -->")
END = "<!-- end of the hook reference -->"


@hookspec
def patchworld_register_components() -> list[type]:
    """Return component classes of any kind, e.g. ``[VAE, ViT, Flow, VideoWriter, SyntheticWorld, LoRA]``.

    Each class's kind is the interface it subclasses, and it keeps that interface's contract (its docstring in
    `patchworld.interfaces`; `patchworld.testing` has a check per kind):

    * ``tokenizer`` — `patchworld.Tokenizer` (pixels <-> latents), checked by ``check_tokenizer``;
    * ``backbone`` — `patchworld.Backbone` (tokens at positions -> features; a backbone for `Flow` and `DDPM`
      also `patchworld.GenerativeBackbone`), checked by ``check_backbone``;
    * ``objective`` — `patchworld.Objective` (training and sampling logic), checked by ``check_objective``;
    * ``decoder`` — `patchworld.Decoder` (what ``predict`` writes), checked by ``check_decoder``;
    * ``conditioner`` — `patchworld.Conditioner` (captions -> tokens), checked by ``check_conditioner``;
    * ``datamodule`` — `pytorch_lightning.LightningDataModule`, whose batches are dicts with ``"video"``
      (B, 3, T, H, W) floating in [-1, 1]; optionally ``"caption"`` (a list of B str), ``"labels"`` (a dict of
      (B,) integer tensors) and ``"index"`` ((B,) distinct dataset indices, on which the per-clip random
      draws are keyed), and anything else; checked by ``check_datamodule``;
    * ``prompt_expander`` — `patchworld.interfaces.PromptExpander` (short prompts -> captions in the training
      style; `Prompts` applies the one named by ``--data.expander NAME``; an LLM-backed one must not download
      anything at run time);
    * ``captioner`` — `patchworld.interfaces.Captioner` (videos -> captions; ``patchworld recaption FOLDER
      --captioner NAME`` writes a folder's missing sidecar captions with one);
    * ``adapter`` — `patchworld.interfaces.Adapter` (a cheap fine-tune of a trained model; ``--model.adapter``).

    A class that subclasses none of them makes the plugin broken. The hooks of earlier releases, one per kind
    (``patchworld_register_backbones`` and so on), still work and warn that this one replaces them.
    """


@hookspec
def patchworld_register_recipe_dirs() -> list[str]:
    """Return folders holding ``*.yaml`` recipes; ``patchworld recipes`` lists them and
    ``--config NAME`` finds a recipe by file name (with or without ``.yaml``). A recipe whose name a
    shipped (first-party) recipe already has is listed and reached as ``PLUGIN:NAME`` instead;
    ``--config PLUGIN:NAME`` works for any plugin's recipe."""


@hookspec
def patchworld_register_commands() -> dict:
    """Return ``{name: function}`` for extra ``patchworld NAME ARGS...`` commands.

    ``function(argv: list[str]) -> int`` receives the arguments after NAME, parses them itself
    (jsonargparse recommended, so ``--help`` works) and returns the exit code. A `PatchworldError` it
    raises is printed as one line. Names must not clash with a built-in command
    (`patchworld.plugins.RESERVED_COMMANDS`) or with another plugin's commands.
    """


def reference_markdown() -> str:
    """The hook reference in Markdown: every hookspec above, in order, with its signature and docstring."""
    sections = []
    for name, function in vars(sys.modules[__name__]).items():
        if callable(function) and hasattr(function, "patchworld_spec"):
            parameters = ", ".join(inspect.signature(function).parameters)
            text = inspect.getdoc(function).replace("``", "`")
            sections.append(f"### `{name}({parameters}) -> {function.__annotations__['return']}`\n\n{text}\n")
    return "\n".join(sections)


def with_reference(document: str) -> str:
    """`document` (docs/plugins.md) with its hook reference, between `BEGIN` and `END`, rendered anew."""
    if BEGIN not in document or END not in document.split(BEGIN, 1)[1]:
        raise ValueError(f"no hook reference section: put the lines {BEGIN!r} and {END!r} where it goes")
    head, rest = document.split(BEGIN, 1)
    return f"{head}{BEGIN}\n\n{reference_markdown()}\n{END}{rest.split(END, 1)[1]}"


def update_reference(path: str | Path = "docs/plugins.md") -> None:
    """Rewrite the hook reference of the document at `path` from this module."""
    document = Path(path)
    document.write_text(with_reference(document.read_text()))
