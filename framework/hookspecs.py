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

import pluggy

hookspec = pluggy.HookspecMarker("patchworld")
hookimpl = pluggy.HookimplMarker("patchworld")


@hookspec
def patchworld_register_tokenizers() -> list[type]:
    """Return `patchworld.Tokenizer` subclasses (pixels <-> latents), e.g. ``[Pixels, VAE]``."""


@hookspec
def patchworld_register_backbones() -> list[type]:
    """Return `patchworld.Backbone` subclasses (tokens at positions -> features), e.g. ``[ViT, DiT]``."""


@hookspec
def patchworld_register_objectives() -> list[type]:
    """Return `patchworld.Objective` subclasses (training and sampling logic), e.g. ``[VideoMAE, Flow]``."""


@hookspec
def patchworld_register_decoders() -> list[type]:
    """Return `patchworld.Decoder` subclasses (what ``predict`` writes), e.g. ``[VideoWriter]``."""


@hookspec
def patchworld_register_conditioners() -> list[type]:
    """Return `patchworld.Conditioner` subclasses (captions -> tokens), e.g. ``[TinyTextEncoder]``."""


@hookspec
def patchworld_register_datamodules() -> list[type]:
    """Return `pytorch_lightning.LightningDataModule` subclasses, e.g. ``[SyntheticWorld, VideoFolder]``.

    A datamodule's batches are dicts with at least ``"video"`` (B, 3, T, H, W) in [-1, 1]; optionally
    ``"caption"`` (list of str) and ``"labels"`` (dict of (B,) long tensors).
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
    raises is printed as one line. Names must not clash with fit/validate/test/predict/plugins/recipes
    or with another plugin's commands.
    """
