"""``patchworld new plugin NAME --kind KIND``: a plugin package that installs, passes its tests and trains.

    patchworld new plugin conv_mixer --kind backbone       # makes ./conv_mixer/ (or under --directory)
    pip install -e conv_mixer && pytest conv_mixer && patchworld fit --config conv_mixer

What it writes (from the files in ``framework/templates/``; KIND is backbone, tokenizer, objective,
decoder, conditioner or datamodule, CLASS the name in CamelCase):

    NAME/pyproject.toml                 the `patchworld` entry point NAME = "NAME", the recipe as package data
    NAME/NAME/__init__.py               the hooks: the component and the recipe folder
    NAME/NAME/KIND.py                   the component CLASS: a working example, docstring and shapes commented
    NAME/NAME/recipes/NAME.yaml         a recipe that trains it on a laptop CPU in minutes
    NAME/tests/test_NAME.py             patchworld.testing's conformance check; the recipe trains and predicts
    NAME/README.md

The package is written in a temporary folder and moved into place whole, so a failure leaves nothing.
"""
from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Literal

from .cli import CommandParser
from .errors import PatchworldError
from .plugins import KINDS, Registry


@dataclass(frozen=True)
class Kind:
    """What a scaffold of one kind of component says about itself."""

    key: str  # the recipe key the component goes under (for --KEY.help)
    contract: str  # where its contract is written
    summary: str  # what its recipe trains
    predicts: str  # what `predict` writes with its recipe


FEATURES = "features and pictures of a few clips"
SCAFFOLDS: dict[str, Kind] = {
    "backbone": Kind("model.backbone", "the docstring of patchworld.Backbone",
                     "VideoMAE with the $Class backbone on SyntheticWorld", FEATURES),
    "tokenizer": Kind("model.tokenizer", "the docstring of patchworld.Tokenizer",
                      "VideoMAE with a small ViT on the latents of the $Class tokenizer", FEATURES),
    "objective": Kind("model.objective", "the docstring of patchworld.Objective",
                      "the $Class objective training a small ViT on SyntheticWorld", FEATURES),
    "decoder": Kind("model.decoder", "the docstring of patchworld.Decoder",
                    "VideoMAE with a small ViT on SyntheticWorld, predicting through $Class", "one file per clip"),
    "conditioner": Kind("model.conditioner", "the docstring of patchworld.Conditioner", "text-to-video (rectified "
                        "flow, a small DiT) with captions through the $Class conditioner",
                        "mp4s for the predict split's captions"),
    "datamodule": Kind("data", "the batch contract at the top of patchworld.interfaces",
                       "VideoMAE with a small ViT on the $Class datamodule", FEATURES),
}
TEMPLATES = files("patchworld") / "templates"


def class_name(name: str) -> str:
    """conv_mixer -> ConvMixer."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def check_name(name: str, target: Path, registry: Registry, kind: str) -> None:
    """Refuse, in one line, a name that cannot be a new plugin package at `target`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise PatchworldError(f"plugin name {name!r} is not a valid Python package name: use lowercase letters, "
                              f"digits and underscores, starting with a letter (e.g. conv_mixer)")
    if target.exists():
        raise PatchworldError(f"{target} already exists; choose another name or --directory")
    if importlib.util.find_spec(name) is not None:
        raise PatchworldError(f"plugin name {name!r} is taken: a module of that name is already importable; "
                              f"choose another name")
    cls = class_name(name)
    if cls in registry.components[kind]:
        raise PatchworldError(f"plugin name {name!r} would define the {kind} {cls}, which plugin "
                              f"{registry.components[kind][cls][1]!r} already registers; choose another name")


def render(template: str, **values: str) -> str:
    """A file of `TEMPLATES` with its $placeholders filled in."""
    return Template((TEMPLATES / template).read_text()).substitute(values)


def scaffold(name: str, kind: str, directory: Path, registry: Registry) -> Path:
    """Write the plugin package `name` with one component of `kind` under `directory`; returns its folder."""
    target = Path(directory) / name
    check_name(name, target, registry, kind)
    cls, scaffold_kind = class_name(name), SCAFFOLDS[kind]
    values = {"name": name, "kind": kind, "Class": cls, "distribution": name.replace("_", "-"),
              "hook": KINDS[kind][1], "key": scaffold_kind.key, "contract": scaffold_kind.contract,
              "summary": Template(scaffold_kind.summary).substitute(Class=cls), "predicts": scaffold_kind.predicts}
    example = f"My{KINDS[kind][0].__name__.removeprefix('Lightning')}"  # the templates' class: MyBackbone, ...
    sources = {
        "pyproject.toml": render("pyproject.toml.template", **values),
        "README.md": render("README.md.template", **values),
        f"{name}/__init__.py": render("__init__.py.template", **values),
        f"{name}/{kind}.py": re.sub(rf"\b{example}\b", cls, (TEMPLATES / f"{kind}.py").read_text()),
        f"{name}/recipes/{name}.yaml": render("recipe.yaml.template", **values,
                                              parts=render(f"{kind}.yaml.template", **values)),
        f"tests/test_{name}.py": render("test.py.template", **values),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        for path, text in sources.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def new_command(registry: Registry, argv: list[str]) -> int:
    """Scaffold a plugin package: patchworld new plugin NAME --kind KIND [--directory DIR]."""
    parser = CommandParser(prog="patchworld new", description=new_command.__doc__)
    parser.add_argument("what", type=Literal["plugin"], help="what to make")
    parser.add_argument("name", type=str, help="the package (and plugin) name, e.g. conv_mixer")
    parser.add_argument("--kind", type=Literal[tuple(SCAFFOLDS)], default="backbone",
                        help="the kind of component the package starts with")
    parser.add_argument("--directory", type=str, default=".", help="where to make the package folder")
    args = parser.parse_args(argv)
    target = scaffold(args.name, args.kind, Path(args.directory), registry)
    print(f"created the {args.kind} plugin {target}/ ({class_name(args.name)} in {args.name}/{args.kind}.py)\n"
          f"next:  pip install -e {target} && pytest {target} && patchworld fit --config {args.name}")
    return 0
