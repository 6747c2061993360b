"""Loading plugins from the ``patchworld`` entry-point group and merging what they register.

Loading is safe: a plugin with a problem (it fails to import, a hook raises, it implements an unknown hook,
returns the wrong kind of class, or registers a component or command name another plugin already has) is
skipped as a whole, reported by name in `Registry.failures` and with one warning, and the others keep
working. The first-party ``patchworld_plugins`` is merged first, so on a clash it always keeps its names; two
installed plugins with one entry-point name are both refused. The `Registry` is what turns a recipe's short
class name into a class (`patchworld.parsing.resolve_class_name`), so only healthy plugins' components can be
named.
``PATCHWORLD_DISABLE_PLUGINS=name1,name2`` (entry-point names) stops plugins from being imported at all.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pluggy
from pytorch_lightning import LightningDataModule

from . import hookspecs
from .errors import ComponentError
from .interfaces import Adapter, Backbone, Captioner, Conditioner, Decoder, Objective, PromptExpander, Tokenizer

ENTRY_POINT_GROUP = "patchworld"
FIRST_PARTY = "patchworld_plugins"
DISABLE_ENV = "PATCHWORLD_DISABLE_PLUGINS"
#: the built-in commands (`patchworld.cli.COMMANDS` and Lightning's); a plugin command may take none of them
RESERVED_COMMANDS = ("fit", "validate", "test", "predict", "plugins", "recipes", "new", "course")

#: kind -> the interface its components subclass; a registered class's kind is read from it
KINDS: dict[str, type] = {
    "tokenizer": Tokenizer,
    "backbone": Backbone,
    "objective": Objective,
    "decoder": Decoder,
    "conditioner": Conditioner,
    "datamodule": LightningDataModule,
    "prompt_expander": PromptExpander,
    "captioner": Captioner,
    "adapter": Adapter,
}

#: every hook a plugin may implement (the hookspecs)
HOOK_NAMES = tuple(sorted(name for name in vars(hookspecs) if name.startswith(f"{ENTRY_POINT_GROUP}_")
                          and hasattr(getattr(hookspecs, name), f"{ENTRY_POINT_GROUP}_spec")))
COMPONENT_HOOK = "patchworld_register_components"
#: the one-hook-per-kind names of earlier releases -> the kind each returned; still called, with a warning
OLD_HOOKS = {f"{ENTRY_POINT_GROUP}_register_{kind}s": kind for kind in KINDS if kind != "adapter"}


def kind_of(cls: object) -> str | None:
    """The kind of a component class (the first interface of `KINDS` it subclasses), else None."""
    return next((kind for kind, base in KINDS.items() if isinstance(cls, type) and issubclass(cls, base)), None)


@dataclass
class Registry:
    """Everything the loaded plugins contribute, and the plugins that contribute nothing and why."""

    components: dict[str, dict[str, tuple[type, str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    recipe_dirs: list[tuple[Path, str]] = field(default_factory=list)
    commands: dict[str, tuple[object, str]] = field(default_factory=dict)
    #: plugin name -> why it was skipped (none of its contributions is used)
    failures: dict[str, str] = field(default_factory=dict)
    #: plugin name -> why it was not imported (``PATCHWORLD_DISABLE_PLUGINS``)
    disabled: dict[str, str] = field(default_factory=dict)

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

    def _recipe_table(self) -> list[tuple[str, str, Path, str]]:
        """(listed name, file stem, path, plugin) of every recipe, the first-party plugin's first."""
        dirs = sorted(self.recipe_dirs, key=lambda item: item[1] != FIRST_PARTY)  # stable: otherwise load order
        table, seen = [], set()
        for folder, plugin in dirs:
            for path in sorted(folder.glob("*.yaml")):
                key = path.stem if path.stem not in seen else f"{plugin}:{path.stem}"
                seen.add(path.stem)
                table.append((key, path.stem, path, plugin))
        return table

    def recipes(self) -> dict[str, tuple[Path, str]]:
        """recipe name (file stem) -> (path, plugin).

        Names never shadow each other silently: when two plugins ship a recipe of the same name, the
        first-party one (else the one loaded first) keeps the plain name and the other is listed as
        ``<plugin>:<name>`` (`recipe_notes` says so)."""
        found: dict[str, tuple[Path, str]] = {}
        for key, _, path, plugin in self._recipe_table():
            found.setdefault(key, (path, plugin))
        return found

    def recipe_notes(self) -> dict[str, str]:
        """listed recipe name -> a note about a name clash (only the clashing recipes have one)."""
        table = self._recipe_table()
        owner = {key: plugin for key, stem, _, plugin in table if key == stem}
        notes: dict[str, str] = {}
        renamed: dict[str, list[str]] = {}
        for key, stem, _, plugin in table:
            if key != stem:
                notes[key] = f"plugin {owner[stem]!r} has a recipe {stem!r} too; use --config {key}"
                renamed.setdefault(stem, []).append(key)
        for stem, keys in renamed.items():
            notes[stem] = f"a plugin recipe of this name is listed as {', '.join(keys)}"
        return notes

    def find_recipe(self, name: str) -> tuple[Path, str] | None:
        """The recipe ``NAME`` (as listed by `recipes`) or ``PLUGIN:NAME`` (that plugin's), else None."""
        name = name.removesuffix(".yaml")
        found = self.recipes()
        if name in found:
            return found[name]
        plugin, _, stem = name.rpartition(":")
        for _, recipe, path, owner in self._recipe_table():
            if plugin and owner == plugin and recipe == stem:
                return path, owner
        return None


@dataclass
class _Contribution:
    """What one plugin's hooks returned, merged only if all of it is sound."""

    plugin: str
    components: list[tuple[str, type]] = field(default_factory=list)
    recipe_dirs: list[Path] = field(default_factory=list)
    commands: dict[str, object] = field(default_factory=dict)


class PluginProblem(ComponentError):
    """A plugin that cannot be used; the message names what is wrong and how to fix it."""


def _plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def build_registry(modules: dict[str, ModuleType | None], failures: dict[str, str] | None = None,
                   disabled: dict[str, str] | None = None) -> Registry:
    """Merge what the given plugin modules register. `modules` maps plugin name -> module.

    Each plugin is checked on its own first (hook names, what its hooks return); a plugin with a problem,
    or whose component or command names are already taken by a plugin merged before it, is skipped as a
    whole and recorded in `Registry.failures`. The first-party plugin is merged first."""
    registry = Registry(failures=dict(failures or {}), disabled=dict(disabled or {}))
    for plugin in sorted(modules, key=lambda name: name != FIRST_PARTY):  # stable: otherwise the given order
        if modules[plugin] is None:
            continue
        try:
            _merge(registry, _collect(plugin, modules[plugin]))
        except PluginProblem as problem:
            _fail(registry, plugin, str(problem))
    return registry


def _fail(registry: Registry, plugin: str, message: str) -> None:
    registry.failures[plugin] = message
    warnings.warn(f"patchworld plugin {plugin!r} skipped: {message}", stacklevel=3)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, HOOK_NAMES + tuple(OLD_HOOKS), n=1)
    return f" (did you mean {COMPONENT_HOOK if close[0] in OLD_HOOKS else close[0]}?)" if close else ""


def _check_hook_names(plugin: str, module: object, manager: pluggy.PluginManager) -> None:
    """pytest's rule: an implementation of a hook with no spec is an error. A ``patchworld_*`` function
    without the marker is registered by nobody, which is almost always a forgotten ``@hookimpl``: warn."""
    for attr in dir(module):
        try:
            opts = manager.parse_hookimpl_opts(module, attr)
        except Exception:  # an attribute that cannot even be read is not a hook
            continue
        if opts is not None:
            hook = opts.get("specname") or attr
            if hook not in HOOK_NAMES and hook not in OLD_HOOKS:
                raise PluginProblem(f"{attr} implements unknown hook {hook!r}{_did_you_mean(hook)}; "
                                    f"the hooks are: {', '.join(HOOK_NAMES)}")
        elif attr.startswith(f"{ENTRY_POINT_GROUP}_") and inspect.isroutine(getattr(module, attr, None)):
            what = "is not decorated" if attr in HOOK_NAMES or attr in OLD_HOOKS else f"is not a hook{_did_you_mean(attr)} and is not decorated"
            warnings.warn(f"patchworld plugin {plugin!r}: function {attr} {what} with @patchworld.hookimpl, "
                          f"so patchworld ignores it", stacklevel=4)


def _collect(plugin: str, module: object) -> _Contribution:
    """Call one plugin's hooks and check what they return; a PluginProblem names the first problem."""
    manager = _plugin_manager()
    _check_hook_names(plugin, module, manager)
    try:
        manager.register(module, name=plugin)
    except pluggy.PluginValidationError as error:  # e.g. a hook taking arguments its spec does not have
        raise PluginProblem(str(error)) from None
    found = _Contribution(plugin)
    for hook_name in (COMPONENT_HOOK, *OLD_HOOKS):
        hook = getattr(manager.hook, hook_name, None)  # an old hook exists only where a plugin implements it
        for impl in hook.get_hookimpls() if hook is not None else ():
            if hook_name in OLD_HOOKS:
                warnings.warn(f"patchworld plugin {plugin!r}: {hook_name} is deprecated; return its classes from "
                              f"{COMPONENT_HOOK} (each class's kind is read from its interface)", FutureWarning,
                              stacklevel=4)
            for cls in _call_hook(impl, hook_name, (list, tuple), "a list of classes"):
                kind = OLD_HOOKS.get(hook_name) or kind_of(cls)
                if kind is None:
                    raise PluginProblem(f"{hook_name} returned {cls!r}, which is no component class (a subclass "
                                        f"of one of {', '.join(base.__name__ for base in KINDS.values())})")
                if not (isinstance(cls, type) and issubclass(cls, KINDS[kind])):
                    raise PluginProblem(f"{hook_name} returned {cls!r} as a {kind}, but it is not a "
                                        f"{KINDS[kind].__name__} subclass")
                twin = next((c for k, c in found.components if k == kind and c.__name__ == cls.__name__), None)
                if twin is not None and twin is not cls:
                    raise PluginProblem(f"{kind} {cls.__name__!r} is registered twice by this plugin "
                                        f"({twin.__module__} and {cls.__module__})")
                found.components.append((kind, cls))
    for impl in manager.hook.patchworld_register_recipe_dirs.get_hookimpls():
        for folder in _call_hook(impl, "patchworld_register_recipe_dirs", (list, tuple), "a list of folders"):
            found.recipe_dirs.append(Path(folder))
    for impl in manager.hook.patchworld_register_commands.get_hookimpls():
        found.commands.update(_call_hook(impl, "patchworld_register_commands", dict, "a dict {name: function}"))
    return found


def _call_hook(impl, hook_name: str, types: type | tuple[type, ...], what: str):
    try:
        result = impl.function()
    except Exception as error:  # a broken plugin must not take the others down
        raise PluginProblem(f"hook {hook_name} failed: {type(error).__name__}: {error}") from None
    if result is None:
        return types[0]() if isinstance(types, tuple) else types()
    if not isinstance(result, types):
        raise PluginProblem(f"hook {hook_name} must return {what}, got {type(result).__name__}")
    return result


def _merge(registry: Registry, found: _Contribution) -> None:
    """Add one plugin's contributions, all or none: a name another plugin already has disables this one."""
    plugin, clashes = found.plugin, []
    for kind, cls in found.components:
        existing = registry.components[kind].get(cls.__name__)
        if existing is not None and existing[0] is not cls:
            clashes.append(f"{kind} {cls.__name__!r} ({cls.__module__}) is already registered by plugin "
                           f"{existing[1]!r} ({existing[0].__module__})")
    for name in found.commands:
        if name in RESERVED_COMMANDS:
            clashes.append(f"command {name!r} is a built-in patchworld command")
        elif name in registry.commands:
            clashes.append(f"command {name!r} is already registered by plugin {registry.commands[name][1]!r}")
    if clashes:
        raise PluginProblem("; ".join(clashes) + f" — rename it in plugin {plugin!r}, uninstall one of the "
                            f"plugins, or set {DISABLE_ENV}")
    for kind, cls in found.components:
        registry.components[kind].setdefault(cls.__name__, (cls, plugin))
    registry.recipe_dirs.extend((folder, plugin) for folder in found.recipe_dirs)
    registry.commands.update((name, (function, plugin)) for name, function in found.commands.items())


def disabled_plugin_names() -> list[str]:
    """The entry-point names in ``PATCHWORLD_DISABLE_PLUGINS`` (comma separated)."""
    return [name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()]


def _shared_names(entry_points, disabled: list[str]) -> dict[str, list[str]]:
    """Entry-point name -> the different modules installed under it, for names that more than one has (and
    that are not disabled)."""
    values: dict[str, list[str]] = {}
    for entry_point in (point for point in entry_points if point.name not in disabled):
        values.setdefault(entry_point.name, [])
        if entry_point.value not in values[entry_point.name]:
            values[entry_point.name].append(entry_point.value)
    return {name: found for name, found in values.items() if len(found) > 1}


@lru_cache(maxsize=1)
def load_plugins() -> Registry:
    """Import every plugin in the ``patchworld`` entry-point group (once per process) and merge them;
    plugins named in ``PATCHWORLD_DISABLE_PLUGINS`` are not imported."""
    modules: dict[str, ModuleType] = {}
    failures: dict[str, str] = {}
    requested = disabled_plugin_names()
    disabled: dict[str, str] = {}
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for name, values in _shared_names(entry_points, requested).items():  # neither is the one meant: refuse both
        failures[name] = (f"two installed plugins have the entry-point name {name!r} ({', '.join(values)}); "
                          f"uninstall or rename one")
        warnings.warn(f"patchworld plugin {name!r} skipped: {failures[name]}", stacklevel=2)
    for entry_point in entry_points:
        if entry_point.name in failures:
            continue
        if entry_point.name in requested:
            disabled[entry_point.name] = f"disabled by {DISABLE_ENV} (not imported)"
            continue
        try:
            modules[entry_point.name] = entry_point.load()
        except Exception as error:  # report by name, keep the rest working
            failures[entry_point.name] = f"import failed: {type(error).__name__}: {error}"
            warnings.warn(f"patchworld plugin {entry_point.name!r} could not be loaded: {error}", stacklevel=2)
    for name in requested:
        disabled.setdefault(name, f"named in {DISABLE_ENV}, but no plugin of that name is installed")
    return build_registry(modules, failures, disabled)
