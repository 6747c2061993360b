"""patchworld: a plugin-based PyTorch Lightning framework for video world models.

The import name ``patchworld`` maps to the ``framework/`` folder; first-party plugins are the
``patchworld_plugins`` package (``plugins/``) and shipped recipes the ``patchworld_recipes`` package
(``recipes/``).
"""
from .errors import ComponentError, DataError, PatchworldError
from .hookspecs import hookimpl
from .interfaces import Backbone, Conditioner, Decoder, Objective, Tokenizer, split_past_future
from .model import WorldModel
from .patches import PatchEmbed3d, gather_tokens, grid_positions, patchify, unpatchify
from .plugins import load_plugins
from .positions import Rope3d, sincos_3d

__all__ = [
    "Backbone", "ComponentError", "Conditioner", "DataError", "Decoder", "Objective", "PatchEmbed3d",
    "PatchworldError", "Rope3d", "Tokenizer", "WorldModel", "gather_tokens", "grid_positions", "hookimpl",
    "load_plugins", "patchify", "sincos_3d", "split_past_future", "unpatchify",
]
