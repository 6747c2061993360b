"""The patchworld plugin hooks. These docstrings are the plugin API reference.

A plugin is an importable module (or package) named in the ``patchworld`` entry-point group::

    # pyproject.toml of your plugin
    [project.entry-points.patchworld]
    my_plugin = "my_plugin"

It implements any of the hooks below with ``@patchworld.hookimpl``. Every ``patchworld_register_*``
hook returns a list; patchworld merges the lists of all plugins. A plugin that fails to import, whose hook
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
def patchworld_register_tokenizers() -> list[type]:
    """Return `patchworld.Tokenizer` subclasses (pixels <-> latents), e.g. ``[Pixels, VAE]``.

    Each keeps the tokenizer contract (the `Tokenizer` docstring); ``patchworld.testing.check_tokenizer``
    checks it.
    """


@hookspec
def patchworld_register_backbones() -> list[type]:
    """Return `patchworld.Backbone` subclasses (tokens at positions -> features), e.g. ``[ViT, DiT]``.

    Each keeps the backbone contract (the `Backbone` docstring; a backbone for `Flow` and `DDPM` also
    `patchworld.GenerativeBackbone`); ``patchworld.testing.check_backbone`` checks it.
    """


@hookspec
def patchworld_register_objectives() -> list[type]:
    """Return `patchworld.Objective` subclasses (training and sampling logic), e.g. ``[VideoMAE, Flow]``.

    Each keeps the objective contract (the `Objective` docstring); ``patchworld.testing.check_objective``
    checks it.
    """


@hookspec
def patchworld_register_decoders() -> list[type]:
    """Return `patchworld.Decoder` subclasses (what ``predict`` writes), e.g. ``[VideoWriter]``.

    Each keeps the decoder contract (the `Decoder` docstring); ``patchworld.testing.check_decoder`` checks it.
    """


@hookspec
def patchworld_register_conditioners() -> list[type]:
    """Return `patchworld.Conditioner` subclasses (captions -> tokens), e.g. ``[TinyTextEncoder]``.

    Each keeps the conditioner contract (the `Conditioner` docstring); ``patchworld.testing.check_conditioner``
    checks it.
    """


@hookspec
def patchworld_register_datamodules() -> list[type]:
    """Return `pytorch_lightning.LightningDataModule` subclasses, e.g. ``[SyntheticWorld, VideoFolder]``.

    A datamodule's batches are dicts with ``"video"`` (B, 3, T, H, W) floating in [-1, 1]; optionally
    ``"caption"`` (a list of B str), ``"labels"`` (a dict of (B,) integer tensors) and ``"index"`` ((B,)
    distinct dataset indices, on which the per-clip random draws are keyed), and anything else.
    ``patchworld.testing.check_datamodule`` checks them.
    """


@hookspec
def patchworld_register_prompt_expanders() -> list[type]:
    """Return `patchworld.interfaces.PromptExpander` subclasses (short prompts -> captions in the training
    style), e.g. ``[StyleExpander]``; `Prompts` applies the one named by ``--data.expander NAME``.

    ``expand(prompts)`` returns as many non-empty captions, in order, the same every time (the
    `PromptExpander` docstring). An LLM-backed one belongs here: it must not download anything at run time.
    """


@hookspec
def patchworld_register_captioners() -> list[type]:
    """Return `patchworld.interfaces.Captioner` subclasses (videos -> captions), e.g. ``[ProbeCaptioner]``;
    ``patchworld recaption FOLDER --captioner NAME`` writes a folder's missing sidecar captions with one.

    ``caption(video)`` takes clips (B, 3, `frames`, H, W) in [-1, 1] at its `size` and returns B non-empty
    captions, each clip on its own (the `Captioner` docstring).
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
    raises is printed as one line. Names must not clash with fit/validate/test/predict/plugins/recipes/new
    or with another plugin's commands.
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
