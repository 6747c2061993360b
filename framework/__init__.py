"""patchworld: a plugin-based PyTorch Lightning framework for video world models.

The import name ``patchworld`` maps to the ``framework/`` folder; first-party plugins are the
``patchworld_plugins`` package (``plugins/``) and shipped recipes the ``patchworld_recipes`` package
(``recipes/``). Plugin authors: `patchworld.testing` holds the conformance checks, ``patchworld new plugin``
scaffolds a package (docs/plugins.md).
"""
import os

# OpenMP compute threads sleep instead of spinning while they wait for work. On a machine shared with other
# busy processes, spinning threads fight them for the cores and a training step can take 10x longer
# (benchmarks/threads.py, docs/performance.md). libgomp reads this when torch loads it, so it is set before
# torch is imported; set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import ComponentError, ContractError, DataError, PatchworldError
from .hookspecs import hookimpl
from .interfaces import (Backbone, Conditioner, Decoder, GenerativeBackbone, Objective, Tokenizer,
                         split_past_future)
from .model import WorldModel
from .patches import PatchEmbed3d, gather_tokens, grid_positions, patchify, unpatchify
from .plugins import load_plugins
from .positions import Rope3d, sincos_3d

__all__ = [
    "Backbone", "ComponentError", "Conditioner", "ContractError", "DataError", "Decoder", "GenerativeBackbone",
    "Objective", "PatchEmbed3d", "PatchworldError", "Rope3d", "Tokenizer", "WorldModel", "gather_tokens",
    "grid_positions", "hookimpl", "load_plugins", "patchify", "sincos_3d", "split_past_future", "unpatchify",
]
