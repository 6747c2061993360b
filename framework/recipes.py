"""Recipe -> world: the one place patchworld builds a `WorldModel` and its datamodule from a recipe.

* `PatchworldCLI` — Lightning's CLI over the one `WorldModel`, with any registered datamodule selected by name
  under ``data``, omegaconf interpolation, and ``--ckpt_path`` loading only weights (the recipe defines the
  model; a checkpoint that does not fit is refused, naming the first difference).
* `resolve_recipe_args(argv, registry)` — ``--config NAME`` (or ``PLUGIN:NAME``) resolved to a shipped recipe.
* `load_world(recipe, checkpoint, overrides)` -> (WorldModel, datamodule) exactly as ``patchworld fit`` builds
  them; `load_run(checkpoint)` the same from a fit run's own ``config.yaml``.
* `load_weights(model, path)` — a checkpoint's weights (and training clip length) into a `WorldModel`, checked
  to fit first.

The command router (`patchworld.cli`), the evaluation, the kit (`patchworld.testing`) and plugins all call
these; checkpoint files themselves are read by `patchworld.checkpoints`.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning import LightningDataModule
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .checkpoints import check_fits, find_last, load_checkpoint, run_recipe
from .errors import PatchworldError
from .model import WorldModel
from .parsing import PatchworldParser, integers_first
from .plugins import Registry, load_plugins
from .precision import trainer_precision
from .runs import LastAtTheEnd, StepsProgressBar, cut_short, discard_empty_run

# Lightning's advice about loggers is noise before every command's output
warnings.filterwarnings("ignore", message="Starting from v1.9.0, `tensorboardX` has been removed")
# and so is what nobody running patchworld can act on: Lightning calling an API newer torch deprecates, its model
# summary not sizing bf16 weights, and (loading a checkpoint into a new run's folder, as every predict and resume
# does) its checkpoint callback noting that the folder changed
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"Precision bf16-\w+ is not supported by the model summary")
warnings.filterwarnings("ignore", message="The dirpath has changed from")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda record: "💡 Tip" not in record.getMessage())


class PatchworldCLI(LightningCLI):
    """LightningCLI over `WorldModel`; any registered datamodule is selected by name under ``data``."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        with warnings.catch_warnings():  # we pass args on purpose, after resolving recipe names
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
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


def load_world(recipe: str | Path, checkpoint: str | Path | None = None, overrides: list[str] | None = None):
    """(WorldModel, datamodule) from a recipe, as ``patchworld fit`` would build them.

    `recipe` is a path or a shipped recipe name; `overrides` are extra CLI arguments (e.g.
    ``["--data.init_args.val_size", "512"]``). With a `checkpoint` (a patchworld .ckpt, or ``"last"``: the
    newest ``last.ckpt`` under the recipe's ``trainer.default_root_dir``) the model's weights
    are loaded from it, and a checkpoint trained with other settings is a `PatchworldError` naming the keys
    that differ; without one they keep their random initialisation, seeded by the recipe's ``seed_everything``.
    """
    args = resolve_recipe_args(["--config", str(recipe)], load_plugins()) + list(overrides or [])
    cli = PatchworldCLI(args=args, run=False)
    model = cli.model
    if checkpoint is not None:
        if str(checkpoint) == "last":  # the newest last.ckpt of the recipe's runs
            checkpoint = find_last(cli.trainer.default_root_dir)
        load_weights(model, checkpoint, str(recipe))
    return model, cli.datamodule


def load_run(checkpoint: str | Path, weights: bool = True):
    """(WorldModel, datamodule) of a fit run (`patchworld.checkpoints.run_recipe`), with the checkpoint's
    weights, or with ``weights=False`` freshly initialised (seeded by the run's recipe): the same architecture
    untrained."""
    recipe, path = run_recipe(checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.yaml").write_text(yaml.safe_dump(recipe))
        return load_world(Path(folder) / "config.yaml", path if weights else None)


def load_weights(model, path: str | Path, recipe: str | None = None, what: str = "checkpoint") -> None:
    """Load a patchworld checkpoint's weights and the clip length it trained on into `model` (a `WorldModel`);
    one that does not fit is a `PatchworldError`. The run seed and RNG states stay the recipe's, so a trained
    model and its random-init control draw the same noise, and a fine-tune starts from its own seed."""
    state = load_checkpoint(path, what)
    check_fits(model, state, path, recipe)
    model.load_state_dict(state["state_dict"])
    model.clip_frames = state.get("patchworld_clip_frames")
