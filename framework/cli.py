"""The ``patchworld`` command.

* ``patchworld fit|validate|test|predict --config RECIPE [--key value ...]`` — Lightning's CLI over the one
  `WorldModel`, with plugins loaded first so components are named by their short class names, omegaconf
  interpolation in recipes, and RECIPE either a path or the name of a shipped recipe.
* ``patchworld plugins`` — every component by kind, with the plugin it came from.
* ``patchworld recipes`` — the shipped recipes (and those plugins ship).
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

from pytorch_lightning import LightningDataModule
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .errors import PatchworldError
from .model import WorldModel
from .plugins import KINDS, Registry, load_plugins

#: recipe key -> component kind, for error messages that list the valid names
_COMPONENT_KEYS = {f"model.{kind}": kind for kind in KINDS if kind != "datamodule"} | {"data": "datamodule"}


class PatchworldParser(LightningArgumentParser):
    """Lightning's parser, with errors that list the valid component names."""

    def error(self, message: str, ex: Exception | None = None):
        return super().error(explain_parse_error(message, load_plugins()), ex)


def explain_parse_error(message: str, registry: Registry) -> str:
    """Put what a person needs first: the key, the component, and the valid names or the bad parameter."""
    for key, kind in sorted(_COMPONENT_KEYS.items(), key=lambda item: -len(item[0])):
        if f'Parser key "{key}"' not in message:
            continue
        names = ", ".join(registry.names(kind))
        bad_option = re.search(r"class_path '([^']+)':\s*(?:Option|Key) '([^']+)' is not (?:accepted|expected)", message)
        if bad_option:
            component = bad_option.group(1).rsplit(".", 1)[-1]
            return (f"{kind} {component} (at {key}) has no parameter {bad_option.group(2)!r}; "
                    f"`patchworld fit --{key}.help {component}` lists its parameters\n{message}")
        unknown = re.search(r"Expected a dot import path string: (\S+)", message)
        if unknown:
            return f"unknown {kind} {unknown.group(1)!r} at {key}; available {kind}s: {names}\n{message}"
        return f"invalid {kind} at {key} (available {kind}s: {names})\n{message}"
    return message


class PatchworldCLI(LightningCLI):
    """LightningCLI over `WorldModel`; any registered datamodule is selected by name under ``data``."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        super().__init__(
            WorldModel,
            LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
            auto_configure_optimizers=False,
            parser_class=PatchworldParser,
            args=args,
            run=run,
        )

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer, with the checkpoint callback also keeping `checkpoints/last.ckpt`."""
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.save_last is None:
            trainer.checkpoint_callback.save_last = True
        return trainer


def resolve_recipe_args(argv: list[str], registry: Registry) -> list[str]:
    """Let ``--config NAME`` name a shipped recipe when NAME is not an existing file."""
    resolved = list(argv)
    recipes = registry.recipes()
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            value = resolved[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if Path(value).exists():
            continue
        name = Path(value).name.removesuffix(".yaml")
        if name not in recipes:
            raise PatchworldError(f"recipe {value!r} not found; shipped recipes: {', '.join(sorted(recipes))}")
        path = str(recipes[name][0])
        if arg.startswith("--config="):
            resolved[i] = f"--config={path}"
        else:
            resolved[i + 1] = path
    return resolved


def show_plugins(registry: Registry, argv: list[str]) -> int:
    """Print every component by kind with the plugin that registered it."""
    for kind in KINDS:
        print(f"{kind}s:")
        for name in registry.names(kind):
            cls, plugin = registry.components[kind][name]
            summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"  {name:<18} [{plugin}] {summary}")
    show_commands(registry)
    for plugin, problem in registry.failures.items():
        print(f"broken plugin {plugin!r}: {problem}")
    return 0


def show_recipes(registry: Registry, argv: list[str]) -> int:
    """Print the recipes shipped by patchworld and by plugins."""
    for name, (path, plugin) in sorted(registry.recipes().items()):
        print(f"  {name:<22} [{plugin}] {path}")
    return 0


def show_commands(registry: Registry) -> None:
    if registry.commands:
        print("commands from plugins:")
        for name, (function, plugin) in sorted(registry.commands.items()):
            summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
            print(f"  {name:<18} [{plugin}] {summary}")


COMMANDS = {"plugins": show_plugins, "recipes": show_recipes}
USAGE = """usage: patchworld COMMAND [options]

training and inference (Lightning; `patchworld COMMAND --help` for options):
  fit                train a recipe:  patchworld fit --config recipes/videomae-tiny.yaml
  validate / test    evaluate a checkpoint (--ckpt_path)
  predict            run a checkpoint through the recipe's decoder (--ckpt_path)
catalogue:
  plugins            every component by kind, with the plugin it came from
  recipes            the shipped recipes"""


def show_usage(registry: Registry) -> int:
    print(USAGE)
    show_commands(registry)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        registry = load_plugins()
        if not argv or argv[0] in ("-h", "--help"):
            return show_usage(registry)
        if argv[0] in COMMANDS:
            return COMMANDS[argv[0]](registry, argv[1:])
        if argv[0] in registry.commands:
            return registry.commands[argv[0]][0](argv[1:])
        with warnings.catch_warnings():  # we pass args on purpose, after resolving recipe names
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            PatchworldCLI(args=resolve_recipe_args(argv, registry))
    except PatchworldError as error:
        print(f"patchworld: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
