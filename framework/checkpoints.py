"""Reading checkpoints and weights files: the one place patchworld loads them, safely.

* `load_checkpoint(path)` -> the dict of a Lightning ``.ckpt``, read with ``torch.load(weights_only=True)``:
  tensors and plain containers only, so a pickle that asks to run code (``os.system``, ``eval``, ...) is
  refused with one line naming the file before anything runs.
* `read_part(path, part)` -> one part's weights (and stored configuration) from a ``.ckpt`` or an exported
  ``.safetensors`` (read with safetensors, which holds no code at all).
* `check_fits(model, checkpoint, path, recipe)`: a one-line error naming the first difference between the
  model a recipe builds and the one a checkpoint holds (another part class, missing or extra weights,
  other shapes).
* `find_last(root)`: the newest ``last.ckpt`` of the runs under a directory (``--ckpt_path last``).
* `run_recipe(checkpoint)` -> the recipe a fit run saved beside its checkpoints, and the checkpoint.

Building a model from a recipe and loading weights into it is `patchworld.recipes` (`load_world`,
`load_weights`).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from .errors import PatchworldError

PARTS = ("tokenizer", "backbone", "objective", "decoder", "conditioner")


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise PatchworldError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise PatchworldError(f"{what} {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise PatchworldError(f"{what} {str(path)!r} is empty (0 bytes)")


def load_checkpoint(path: str | Path, what: str = "checkpoint", lightning: bool = True) -> dict:
    """The contents of a patchworld (Lightning) ``.ckpt`` (or, with ``lightning=False``, of any file of tensors
    saved with ``torch.save``), loaded without running any code from the file."""
    path = Path(path)
    _require_file(path, what)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(error))
        if refused:
            raise PatchworldError(f"{what} {str(path)!r} refused: it holds code, not only weights (it asks for "
                                  f"{refused.group(1)!r}); nothing "
                                  f"from it was run. Only load checkpoints from people you trust") from None
        raise PatchworldError(f"{what} {str(path)!r} could not be read: not a torch checkpoint (a patchworld .ckpt "
                              f"from `patchworld fit` was expected)") from None
    except Exception as error:  # truncated zip, text file, ...
        reason = "truncated or corrupted" if "zip archive" in str(error) else "not a torch checkpoint"
        raise PatchworldError(f"{what} {str(path)!r} could not be read: {reason} (a patchworld .ckpt from "
                              f"`patchworld fit` was expected)") from None
    if lightning and (not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict)):
        raise PatchworldError(f"{what} {str(path)!r} has no state_dict: it is not a patchworld (Lightning) checkpoint")
    return checkpoint


def read_part(path: str | Path, part: str = "tokenizer") -> tuple[dict[str, torch.Tensor], dict | None]:
    """Weights+buffers of one part of a WorldModel, from a patchworld ``.ckpt`` (keys ``<part>.*``), a run
    directory (its newest ``last.ckpt``) or an exported ``.safetensors``, and the part's stored configuration
    (its ``_extra_state``) if it has one."""
    path = find_last(path) if Path(path).is_dir() else Path(path)
    if path.suffix == ".safetensors":
        _require_file(path, "weights file")
        try:
            with safe_open(str(path), framework="pt") as file:
                tensors = {key: file.get_tensor(key) for key in file.keys()}
                metadata = file.metadata() or {}
            extra = json.loads(metadata["extra_state"]) if "extra_state" in metadata else None
        except Exception as error:
            raise PatchworldError(f"{str(path)!r} is not a readable safetensors file: {_first_line(error)}") from None
        return tensors, extra
    state = load_checkpoint(path)["state_dict"]
    prefix = f"{part}."
    weights = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not weights:
        parts = sorted({key.split(".", 1)[0] for key in state})
        raise PatchworldError(f"checkpoint {str(path)!r} has no {part!r} weights; the parts it holds: "
                              f"{', '.join(parts) or 'none'}")
    return weights, weights.pop("_extra_state", None)


def check_fits(model: torch.nn.Module, checkpoint: dict, path: str | Path, recipe: str | None = None) -> None:
    """Raise a one-line `PatchworldError` at the first way `checkpoint` does not fit `model`."""
    where = f"recipe {recipe!r}" if recipe else "the recipe"
    own = Path(path).resolve().parent.parent / "config.yaml"  # <run>/checkpoints/x.ckpt -> <run>/config.yaml
    rebuild = f"--config {own}" if own.is_file() else "--config <its run directory>/config.yaml"
    saved = checkpoint.get("hyper_parameters") or {}
    built = getattr(model, "hparams", {}) or {}
    for part in PARTS:
        theirs, ours = _class_name(saved.get(part)), _class_name(built.get(part))
        if theirs and ours and theirs != ours:
            raise PatchworldError(f"checkpoint {str(path)!r} does not fit {where}: its {part} is {theirs}, the "
                                  f"recipe's is {ours} (to rebuild the checkpoint's own model: {rebuild})")
    state, expected = checkpoint["state_dict"], model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise PatchworldError(f"checkpoint {str(path)!r} does not fit {where}: it has no weight {key!r}")
        if torch.is_tensor(value) and torch.is_tensor(state[key]) and value.shape != state[key].shape:
            raise PatchworldError(f"checkpoint {str(path)!r} does not fit {where}: {key} has shape "
                                  f"{tuple(state[key].shape)} there, {tuple(value.shape)} in the recipe's model")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PatchworldError(f"checkpoint {str(path)!r} does not fit {where}: it has weights the recipe's model "
                              f"lacks, e.g. {extra[0]!r}")


def find_last(root: str | Path) -> Path:
    """The most recently written ``last.ckpt`` under `root` (a run directory, any ``version_N``)."""
    root = Path(root)
    found = sorted(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise PatchworldError(f"no last.ckpt under {str(root)!r}: train there first (patchworld fit), or give a "
                              f"checkpoint file")
    return found[-1]


def _class_name(part) -> str | None:
    if isinstance(part, dict) and isinstance(part.get("class_path"), str):
        return part["class_path"].rsplit(".", 1)[-1]
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def run_recipe(checkpoint: str | Path) -> tuple[dict, Path]:
    """The recipe of a fit run, read from the ``config.yaml`` it wrote beside its checkpoints
    (``<run>/version_N/config.yaml`` for ``<run>/version_N/checkpoints/x.ckpt``) without fit's own options, and
    the checkpoint (a run directory means its newest last.ckpt)."""
    path = find_last(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint)
    _require_file(path, "checkpoint")
    config = path.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise PatchworldError(f"checkpoint {str(path)!r}: no config.yaml beside its checkpoints directory ({config}) "
                              f"to rebuild its model from; give a checkpoint of a patchworld fit run")
    recipe = {key: value for key, value in yaml.safe_load(config.read_text()).items()
              if key in ("seed_everything", "trainer", "model", "data")}
    return recipe, path
