"""The ``patchworld`` command: the router from a command name to what runs it.

* ``patchworld fit|validate|test|predict --config RECIPE [--key value ...]`` — Lightning's CLI over the one
  `WorldModel` (`patchworld.recipes.PatchworldCLI`), with plugins loaded first so components are named by their
  short class names, omegaconf interpolation in recipes, and RECIPE either a path or the name of a shipped recipe.
* ``patchworld plugins`` — every component by kind, with the plugin it came from.
* ``patchworld recipes`` — the shipped recipes (and those plugins ship).
* ``patchworld new`` / ``patchworld course`` and every command a plugin registers.

With ``--ckpt_path`` the recipe and the command line define the model and the checkpoint only its weights
(a checkpoint that does not fit is refused, naming the first difference); ``--ckpt_path last`` is the newest
``last.ckpt`` under ``trainer.default_root_dir``. Every failure ends in one line ``patchworld: error: ...``;
``--debug`` (or ``PATCHWORLD_DEBUG=1``) shows the traceback instead (`patchworld.parsing.guarded`).
"""
from __future__ import annotations

import sys

from .course import course_command
from .parsing import CommandParser, guarded
from .plugins import KINDS, Registry, load_plugins
from .recipes import PatchworldCLI, resolve_recipe_args
from .scaffold import new_command

def show_plugins(registry: Registry, argv: list[str]) -> int:
    """Print every component by kind with the plugin that registered it."""
    CommandParser(prog="patchworld plugins", description=show_plugins.__doc__).parse_args(argv)  # --help
    for kind in KINDS:
        print(f"{kind}s:")
        for name in registry.names(kind):
            cls, plugin = registry.components[kind][name]
            summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"  {name:<18} [{plugin}] {summary}")
    show_commands(registry)
    for plugin, problem in registry.failures.items():
        print(f"broken plugin {plugin!r} (none of it is used): {problem}")
    for plugin, reason in registry.disabled.items():
        print(f"disabled plugin {plugin!r}: {reason}")
    return 0


def show_recipes(registry: Registry, argv: list[str]) -> int:
    """Print the recipes shipped by patchworld and by plugins."""
    CommandParser(prog="patchworld recipes", description=show_recipes.__doc__).parse_args(argv)  # --help
    notes = registry.recipe_notes()  # name clashes: the shipped recipe keeps the name, a plugin's is PLUGIN:NAME
    for name, (path, plugin) in sorted(registry.recipes().items()):
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"  {name:<22} [{plugin}] {path}{note}")
    return 0


def show_commands(registry: Registry) -> None:
    if registry.commands:
        print("commands from plugins:")
        for name, (function, plugin) in sorted(registry.commands.items()):
            summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
            print(f"  {name:<18} [{plugin}] {summary}")


COMMANDS = {"plugins": show_plugins, "recipes": show_recipes, "new": new_command, "course": course_command}
USAGE = """usage: patchworld COMMAND [options]

training and inference (Lightning; `patchworld COMMAND --help` for options):
  fit                train a recipe:  patchworld fit --config recipes/videomae-tiny.yaml
  validate / test    evaluate a checkpoint (--ckpt_path)
  predict            run a checkpoint through the recipe's decoder (--ckpt_path)
catalogue:
  plugins            every component by kind, with the plugin it came from
  recipes            the shipped recipes
writing plugins:
  new                a plugin package that installs, tests and trains:  patchworld new plugin NAME --kind backbone
learning:
  course             the course's chapters (docs/course):  patchworld course list;  patchworld course check 1"""


def show_usage(registry: Registry) -> int:
    print(USAGE)
    show_commands(registry)
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(run_command, sys.argv[1:] if argv is None else list(argv))


def run_command(argv: list[str]) -> int:
    registry = load_plugins()
    if not argv or argv[0] in ("-h", "--help"):
        return show_usage(registry)
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]](registry, argv[1:])
    if argv[0] in registry.commands:
        return registry.commands[argv[0]][0](argv[1:])
    PatchworldCLI(args=resolve_recipe_args(argv, registry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
