"""The ``patchworld`` command.

* ``patchworld fit|validate|test|predict --config RECIPE [--key value ...]`` — Lightning's CLI over the one
  `WorldModel`, with plugins loaded first so components are named by their short class names, omegaconf
  interpolation in recipes, and RECIPE either a path or the name of a shipped recipe.
* ``patchworld plugins`` — every component by kind, with the plugin it came from.
* ``patchworld recipes`` — the shipped recipes (and those plugins ship).

With ``--ckpt_path`` the recipe and the command line define the model and the checkpoint only its weights
(a checkpoint that does not fit is refused, naming the first difference); ``--ckpt_path last`` is the newest
``last.ckpt`` under ``trainer.default_root_dir``. Every failure ends in one line ``patchworld: error: ...``;
``--debug`` (or ``PATCHWORLD_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import shutil
import sys
import typing
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from jsonargparse._typehints import ActionTypeHint
from pytorch_lightning import LightningDataModule
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar, Timer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .checkpoints import check_fits, find_last, load_checkpoint
from .errors import PatchworldError
from .model import WorldModel
from .plugins import KINDS, Registry, load_plugins
from .precision import trainer_precision

# Lightning's advice about loggers is noise before every command's output
warnings.filterwarnings("ignore", message="Starting from v1.9.0, `tensorboardX` has been removed")
# and so is what nobody running patchworld can act on: Lightning calling an API newer torch deprecates, its model
# summary not sizing bf16 weights, and (loading a checkpoint into a new run's folder, as every predict and resume
# does) its checkpoint callback noting that the folder changed
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"Precision bf16-\w+ is not supported by the model summary")
warnings.filterwarnings("ignore", message="The dirpath has changed from")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda record: "💡 Tip" not in record.getMessage())

#: recipe key -> component kind, for error messages that list the valid names
_COMPONENT_KEYS = {f"model.{kind}": kind for kind in KINDS if kind != "datamodule"} | {"data": "datamodule"}


class OneLineErrors:
    """Parser mixin: no abbreviated options, and a parse error is a `PatchworldError` (one line, no usage)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False  # `--trainer.max_step 1` must not silently mean max_steps
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # an inner parser: the outer one reports the whole problem
            return super().error(message, ex)
        unrecognized = re.match(r"unrecognized arguments: (--[\w.]+)", message)
        if unrecognized:
            options = [o for action in self._actions for o in action.option_strings]
            close = difflib.get_close_matches(unrecognized.group(1), options, n=1)
            message += f" (did you mean {close[0]}?)" if close else ""
        raise PatchworldError(explain_parse_error(message, load_plugins()))  # folded by `describe`


class PatchworldParser(OneLineErrors, LightningArgumentParser):
    """Lightning's parser, with one-line errors that list the valid component names."""


class CommandParser(OneLineErrors, ArgumentParser):
    """The parser of patchworld's other commands (export, adherence, compare, plugin commands)."""


_BOILERPLATE = ("Parser key", "Given value", "Subtypes", "Errors", "Does not validate", "Problem with given class_path",
                "Expected a <class 'NoneType'>")


def one_line(message: str) -> str:
    """jsonargparse's nested explanation folded to one line: the component and key path, then the innermost
    reason (the value given and what was expected, or e.g. the missing argument)."""
    text = message.strip()
    if "\n" not in text:
        return text
    lines = [(len(line) - len(line.lstrip(" -")), line.strip(" -")) for line in text.splitlines() if line.strip(" -")]
    keys = ".".join(dict.fromkeys(re.findall(r'Parser key "([^"]+)"', text)))
    components = re.findall(r"class_path '(?:[\w.]+\.)?(\w+)'", text)
    reasons = [(depth, line) for depth, line in lines if not line.startswith(_BOILERPLATE)]
    if not reasons:
        return lines[0][1]
    deepest = max(depth for depth, _ in reasons)
    inner = [line for depth, line in reasons if depth == deepest]

    def innermost(label: str) -> str | None:
        found = [(depth, line.split(":", 1)[1].strip()) for depth, line in lines if line.startswith(label + ":")]
        return max(found)[1] if found else None

    if len(inner) > 1 and all(line.startswith("Expected") for line in inner) and innermost("Subtypes"):
        reason = f"expected one of {innermost('Subtypes')}, got {innermost('Given value')}"
    else:
        reason = inner[0]
    reason = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", reason)
    reason = re.sub(r"^Expected a (.+?)\. Got value: (.*)$", r"expected \1, got \2", reason)
    where = f"{components[-1]} ({keys})" if components and keys else components[-1] if components else keys
    return f"{where}: {reason}" if where else reason


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
                    f"`patchworld fit --{key}.help {component}` lists its parameters")
        unknown = re.search(r"Expected a dot import path string: (\S+)", message)
        if unknown:
            return f"unknown {kind} {unknown.group(1)!r} at {key}; available {kind}s: {names}"
        if "Does not validate against any of the Union subtypes" in message and "class_path" not in message:
            return f"invalid {kind} at {key} (available {kind}s: {names})"
    return message


class PatchworldCLI(LightningCLI):
    """LightningCLI over `WorldModel`; any registered datamodule is selected by name under ``data``."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        super().__init__(
            WorldModel,
            LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=PatchworldParser,
            args=args,
            run=run,
        )

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", "omegaconf")  # also for the subcommand parsers
        kwargs.setdefault("prog", "patchworld")  # usage says `patchworld fit`, however the process was started
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # patchworld's batch samplers split every global batch between ranks themselves (and resume exactly),
        # so Lightning must not swap in its DistributedSampler.
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        parser.add_argument("--threads", type=int | None, default=None,
                            help="torch compute threads of this process (torch.set_num_threads); default: one per "
                                 "core. On a machine shared with other busy processes, fewer threads than cores "
                                 "keep the throughput (docs/performance.md)")
        integers_first(parser)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        config.trainer.precision = trainer_precision(config.trainer.precision, config.trainer.accelerator)
        if config.get("threads") is not None:
            if config.threads < 1:
                raise PatchworldError(f"--threads must be at least 1, got {config.threads}")
            torch.set_num_threads(config.threads)

    def _parse_ckpt_path(self) -> None:
        """Lightning would replace the recipe's (and the command line's) model with the checkpoint's saved
        hyper-parameters here; in patchworld the recipe defines the model and the checkpoint its weights."""

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer; its default checkpoint callback also keeps `checkpoints/last.ckpt` and saves
        one when training is interrupted (Ctrl-C, SIGTERM, an error), so a run can always be resumed; a
        `fast_dev_run` saves no checkpoint at all (Lightning's callback would still save `last.ckpt`)."""
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.fast_dev_run:  # a smoke test saves nothing, so it never becomes the model `--ckpt_path last` finds
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        callback = trainer.checkpoint_callback
        if callback is not None and callback.save_last is None:  # not configured by the recipe
            callback.save_last, callback.save_on_exception = True, True
        if callback is not None and callback.save_last:
            trainer.callbacks.append(LastAtTheEnd())
        bar = trainer.progress_bar_callback
        if type(bar) is RichProgressBar:  # Lightning's default bar, not one the recipe configured
            trainer.callbacks[trainer.callbacks.index(bar)] = StepsProgressBar()
        return trainer

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        """Resolve ``--ckpt_path last``, read the checkpoint safely and refuse one that does not fit."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        path = kwargs.get("ckpt_path")
        if path:
            path = find_last(self.trainer.default_root_dir) if path == "last" else Path(path)
            recipes = self.config[subcommand].get("config") or []
            check_fits(self.model, load_checkpoint(path), path, str(recipes[-1]) if recipes else None)
            kwargs["ckpt_path"], kwargs["weights_only"] = str(path), True
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        run = Path(self.trainer.log_dir) if self.trainer.log_dir else None
        fresh = [p for p in (run, *run.parents) if not p.exists()] if run else []  # folders this command makes
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            trainer = self.trainer
            # SystemExit is Lightning's answer to Ctrl-C and SIGTERM, after its checkpoint callback saved
            if isinstance(error, SystemExit) and subcommand == "fit" and trainer.interrupted:
                last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
                resume = f"; resume with --ckpt_path {last}" if last else "; no checkpoint was saved"
                print(f"patchworld: interrupted at step {trainer.global_step}{resume}", file=sys.stderr)
                raise SystemExit(130) from None
            discard_empty_run(fresh)
            raise
        if subcommand == "fit" and (shortfall := cut_short(self.trainer)):
            print(shortfall, file=sys.stderr)


class StepsProgressBar(RichProgressBar):
    """Lightning's progress bar, also showing the optimizer steps done of the planned ones ("step 523/600"): a
    recipe plans steps, not epochs. Lightning's own bar would read "Epoch 1/-2" when no max_epochs is set."""

    def get_metrics(self, trainer, pl_module) -> dict:
        steps = f"{trainer.global_step}/{trainer.max_steps}" if trainer.max_steps > 0 else trainer.global_step
        return {"step": steps, **super().get_metrics(trainer, pl_module)}

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        return description.replace(f"Epoch {current_epoch}/-2", f"Epoch {current_epoch}")  # no epoch limit


class LastAtTheEnd(Callback):
    """Save `last.ckpt` when training ends after steps no checkpoint holds yet. Lightning's checkpoint callback
    saves it at the end only if it never saved one, so a run stopped by `max_time` between two periodic
    checkpoints (`every_n_train_steps`) would lose every step since the last of them."""

    def __init__(self):
        self.saved_step = -1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        callback = trainer.checkpoint_callback
        if trainer.global_step > 0 and self.saved_step != trainer.global_step:
            path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            callback.last_model_path = str(path)
            trainer.save_checkpoint(path, weights_only=callback.save_weights_only)


def cut_short(trainer) -> str | None:
    """One line when training ended before `max_steps`, naming what stopped it, else None; so nobody takes a
    model stopped by a wall-time budget for the one a recipe documents."""
    steps, planned = trainer.global_step, trainer.max_steps
    if not 0 < planned or steps >= planned:
        return None
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        reason = (f"stopped by max_time ({timedelta(seconds=round(timer.time_elapsed()))} of training) after "
                  f"{steps} of {planned} steps; this is not the fully trained model (raise --trainer.max_time)")
    elif trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        reason = f"stopped by max_epochs ({trainer.max_epochs}) after {steps} of {planned} steps"
    else:
        reason = f"stopped early after {steps} of {planned} steps (a callback asked to stop)"
    return f"patchworld: training ended at step {steps} of the {planned} planned: {reason}"


def integers_first(parser: ArgumentParser) -> None:
    """Lightning types batch limits as ``float | int``, so ``--trainer.limit_val_batches 1`` would become 1.0
    (100% of the batches); put ``int`` first so whole numbers count batches and decimals are fractions."""
    for action in parser._actions:
        hint = getattr(action, "_typehint", None) if isinstance(action, ActionTypeHint) else None
        args = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else ()
        if float in args and int in args and args.index(float) < args.index(int):
            action._typehint = typing.Union[tuple([int] + [a for a in args if a is not int])]


def discard_empty_run(fresh: list[Path]) -> None:
    """After a failed command, remove the folders it made (`fresh`, innermost first) if they hold nothing but
    the run's saved configuration."""
    if fresh and fresh[-1].is_dir():
        files = [p for p in fresh[-1].rglob("*") if p.is_file()]
        if all(p.name in ("config.yaml", "hparams.yaml", "metrics.csv") for p in files):
            shutil.rmtree(fresh[-1], ignore_errors=True)


def resolve_recipe_args(argv: list[str], registry: Registry) -> list[str]:
    """Let ``--config NAME`` name a shipped recipe when NAME is not an existing file; ``--config PLUGIN:NAME``
    names that plugin's recipe (how a plugin recipe whose name clashes with another one is reached)."""
    resolved = list(argv)
    recipes = registry.recipes()
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            value = resolved[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        # a file is a recipe file; otherwise NAME, or PLUGIN:NAME for a plugin's recipe (even where a folder
        # NAME exists, e.g. the plugin's own package folder)
        found = None if Path(value).is_file() else registry.find_recipe(Path(value).name)
        if found is None:
            if Path(value).exists():
                check_recipe_file(Path(value))
                continue
            raise PatchworldError(f"recipe {value!r} not found; shipped recipes: {', '.join(sorted(recipes))}")
        path = str(found[0])
        if arg.startswith("--config="):
            resolved[i] = f"--config={path}"
        else:
            resolved[i + 1] = path
    return resolved


def check_recipe_file(path: Path) -> None:
    """A recipe file is a readable, non-empty YAML mapping; the error names the file (and line)."""
    if not path.is_file():
        raise PatchworldError(f"recipe {str(path)!r} is not a file")
    try:
        content = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise PatchworldError(f"recipe {str(path)!r} is not a text (YAML) file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PatchworldError(f"recipe {str(path)!r} is not valid YAML{where}: {problem}") from None
    if content is None:
        raise PatchworldError(f"recipe {str(path)!r} is empty; a recipe sets trainer, model and data "
                              f"(see `patchworld recipes` for examples)")
    if not isinstance(content, dict):
        raise PatchworldError(f"recipe {str(path)!r} must be a mapping of keys (trainer, model, data, ...), "
                              f"not a {type(content).__name__}")
    try:  # interpolations resolve within each recipe file, as the parser will resolve them
        OmegaConf.to_container(OmegaConf.create(content), resolve=True)
    except OmegaConfBaseException as error:
        key = f" at {error.full_key}" if getattr(error, "full_key", None) else ""
        raise PatchworldError(f"recipe {str(path)!r}{key}: {str(error).splitlines()[0]}") from None


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


def scaffold_command(registry: Registry, argv: list[str]) -> int:
    """``patchworld new plugin NAME --kind KIND``: scaffold a plugin package (`patchworld.scaffold`)."""
    from .scaffold import new_command  # it builds on this module's CommandParser

    return new_command(registry, argv)


def course_command(registry: Registry, argv: list[str]) -> int:
    """``patchworld course list | check N``: the course's chapters and their graders (`patchworld.course`)."""
    from .course import course_command as run  # it imports pytest only when grading

    return run(registry, argv)


COMMANDS = {"plugins": show_plugins, "recipes": show_recipes, "new": scaffold_command, "course": course_command}
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


def guarded(command, argv: list[str]) -> int:
    """Run `command(argv)`; any failure becomes one line ``patchworld: error: ...`` on stderr (exit 2 for the
    user's input, 1 otherwise), or its traceback with ``--debug`` / ``PATCHWORLD_DEBUG=1``."""
    debug = "--debug" in argv or os.environ.get("PATCHWORLD_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return command(argv)
    except KeyboardInterrupt:
        print("patchworld: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"patchworld: error: {describe(error)}", file=sys.stderr)
        user_error = find_cause(error, PatchworldError) or getattr(find_cause(error, OSError), "filename", None)
        return 2 if user_error else 1


def run_command(argv: list[str]) -> int:
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
    return 0


def find_cause(error: BaseException, kind: type) -> BaseException | None:
    """`error` or the first exception of type `kind` it was raised from (components' errors arrive wrapped)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def describe(error: Exception) -> str:
    """One line for a person: a patchworld error's own message, a file problem with its path, else the
    innermost cause with the component (and recipe key) it came from."""
    ours = find_cause(error, PatchworldError)
    if ours is not None:
        return one_line(str(ours))
    os_error = find_cause(error, OSError)
    if os_error is not None and os_error.filename:
        return f"{os_error.filename}: {os_error.strerror or os_error}"
    chain = [error]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and inner not in chain:
        chain.append(inner)
    root = chain[-1]
    components = [m.group(1) for e in chain if (m := re.search(r"class_path '([^']+)'", str(e)))]
    where = f"{components[-1].rsplit('.', 1)[-1]}: " if components else ""
    key = f"{root.full_key}: " if getattr(root, "full_key", None) else ""  # omegaconf: the recipe key
    text = str(root).strip().splitlines()
    return (f"{where}{key}{type(root).__name__}: {text[0] if text else ''} "
            f"(run again with --debug for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
