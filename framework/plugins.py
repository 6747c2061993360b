"""Loading plugins from the ``patchworld`` entry-point group and merging what they register."""
from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pluggy
from pytorch_lightning import LightningDataModule

from . import hookspecs
from .errors import ComponentError
from .interfaces import Backbone, Conditioner, Decoder, Objective, Tokenizer

ENTRY_POINT_GROUP = "patchworld"
RESERVED_COMMANDS = ("fit", "validate", "test", "predict", "plugins", "recipes")

#: kind -> (required base class, hook name)
KINDS: dict[str, tuple[type, str]] = {
    "tokenizer": (Tokenizer, "patchworld_register_tokenizers"),
    "backbone": (Backbone, "patchworld_register_backbones"),
    "objective": (Objective, "patchworld_register_objectives"),
    "decoder": (Decoder, "patchworld_register_decoders"),
    "conditioner": (Conditioner, "patchworld_register_conditioners"),
    "datamodule": (LightningDataModule, "patchworld_register_datamodules"),
}


@dataclass
class Registry:
    """Everything the loaded plugins contribute."""

    components: dict[str, dict[str, tuple[type, str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    recipe_dirs: list[tuple[Path, str]] = field(default_factory=list)
    commands: dict[str, tuple[object, str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> type:
        """The class registered as `name`, or a ComponentError listing the valid names."""
        if kind not in KINDS:
            raise ComponentError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        try:
            return self.components[kind][name][0]
        except KeyError:
            raise ComponentError(
                f"unknown {kind} {name!r}; available {kind}s: {', '.join(self.names(kind)) or '(none)'}"
            ) from None

    def recipes(self) -> dict[str, tuple[Path, str]]:
        """recipe name (file stem) -> (path, plugin)."""
        found: dict[str, tuple[Path, str]] = {}
        for folder, plugin in self.recipe_dirs:
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, (path, plugin))
        return found


def _plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def build_registry(modules: dict[str, ModuleType | None], failures: dict[str, str] | None = None) -> Registry:
    """Merge what the given plugin modules register. `modules` maps plugin name -> module."""
    manager = _plugin_manager()
    registry = Registry(failures=dict(failures or {}))
    for name, module in modules.items():
        manager.register(module, name=name)
    for kind, (base, hook_name) in KINDS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            for cls in _call_hook(impl, hook_name, registry):
                _add(registry, kind, base, cls, impl.plugin_name)
    for impl in manager.hook.patchworld_register_recipe_dirs.get_hookimpls():
        for folder in _call_hook(impl, "patchworld_register_recipe_dirs", registry):
            registry.recipe_dirs.append((Path(folder), impl.plugin_name))
    for impl in manager.hook.patchworld_register_commands.get_hookimpls():
        for name, function in dict(_call_hook(impl, "patchworld_register_commands", registry, dict)).items():
            if name in RESERVED_COMMANDS or name in registry.commands:
                owner = registry.commands[name][1] if name in registry.commands else "patchworld"
                raise ComponentError(f"command {name!r} is registered by two plugins: {owner!r} and {impl.plugin_name!r}")
            registry.commands[name] = (function, impl.plugin_name)
    return registry


def _call_hook(impl, hook_name: str, registry: Registry, kind: type = list):
    try:
        return kind(impl.function() or kind())
    except Exception as error:  # a broken plugin must not take the others down
        message = f"hook {hook_name} failed: {type(error).__name__}: {error}"
        registry.failures[impl.plugin_name] = message
        warnings.warn(f"patchworld plugin {impl.plugin_name!r} skipped: {message}", stacklevel=2)
        return kind()


def _add(registry: Registry, kind: str, base: type, cls: type, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ComponentError(f"plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a {base.__name__} subclass")
    name = cls.__name__
    existing = registry.components[kind].get(name)
    if existing is not None and existing[0] is not cls:
        raise ComponentError(
            f"{kind} {name!r} is registered by two plugins: {existing[1]!r} ({existing[0].__module__}) and "
            f"{plugin!r} ({cls.__module__}); uninstall one or rename its class"
        )
    registry.components[kind][name] = (cls, plugin)


@lru_cache(maxsize=1)
def load_plugins() -> Registry:
    """Import every plugin in the ``patchworld`` entry-point group (once per process) and merge them."""
    modules: dict[str, ModuleType] = {}
    failures: dict[str, str] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            modules[entry_point.name] = entry_point.load()
        except Exception as error:  # report by name, keep the rest working
            failures[entry_point.name] = f"import failed: {type(error).__name__}: {error}"
            warnings.warn(f"patchworld plugin {entry_point.name!r} could not be loaded: {error}", stacklevel=2)
    return build_registry(modules, failures)
