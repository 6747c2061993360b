"""``patchworld new plugin NAME --kind KIND``: a plugin package that installs, passes its tests and trains.

    patchworld new plugin conv-mixer --kind backbone       # makes ./conv-mixer/ (or under --directory)
    pip install -e conv-mixer && pytest conv-mixer && patchworld fit --config conv-mixer

NAME is a distribution name as PyPI writes them (conv-mixer, or conv_mixer); its import name PACKAGE has
underscores for hyphens (conv_mixer). What it writes (from the files in ``framework/templates/``; KIND is
backbone, tokenizer, objective, decoder, conditioner or datamodule, CLASS the name in CamelCase):

    NAME/pyproject.toml                 distribution NAME, the `patchworld` entry point PACKAGE = "PACKAGE", the recipe as package data
    NAME/PACKAGE/__init__.py            the hooks: the component and the recipe folder
    NAME/PACKAGE/KIND.py                the component CLASS: a working example, docstring and shapes commented
    NAME/PACKAGE/recipes/NAME.yaml      a recipe that trains it on a laptop CPU in minutes
    NAME/tests/test_PACKAGE.py          patchworld.testing's conformance check; the recipe trains and predicts
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

from .parsing import CommandParser
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


def package_name(name: str) -> str:
    """The import name of the distribution `name`: conv-mixer -> conv_mixer."""
    return name.replace("-", "_")


def class_name(name: str) -> str:
    """conv-mixer or conv_mixer -> ConvMixer."""
    return "".join(part[:1].upper() + part[1:] for part in package_name(name).split("_"))


def check_name(name: str, target: Path, registry: Registry, kind: str) -> None:
    """Refuse, in one line, a name that cannot be a new plugin package at `target`."""
    package = package_name(name)
    if not re.fullmatch(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*", name) or keyword.iskeyword(package):
        raise PatchworldError(f"plugin name {name!r} is not a valid package name: use lowercase letters, digits, "
                              f"hyphens and underscores, starting with a letter (e.g. conv-mixer; its import name "
                              f"is conv_mixer)")
    if target.exists():
        raise PatchworldError(f"{target} already exists; choose another name or --directory")
    if importlib.util.find_spec(package) is not None:
        raise PatchworldError(f"plugin name {name!r} is taken: a module {package!r} is already importable; "
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
    cls, scaffold_kind, package = class_name(name), SCAFFOLDS[kind], package_name(name)
    values = {"name": name, "package": package, "kind": kind, "Class": cls, "distribution": name.replace("_", "-"),
              "key": scaffold_kind.key, "contract": scaffold_kind.contract,
              "summary": Template(scaffold_kind.summary).substitute(Class=cls), "predicts": scaffold_kind.predicts}
    example = f"My{KINDS[kind].__name__.removeprefix('Lightning')}"  # the templates' class: MyBackbone, ...
    sources = {
        "pyproject.toml": render("pyproject.toml.template", **values),
        "README.md": render("README.md.template", **values),
        f"{package}/__init__.py": render("__init__.py.template", **values),
        f"{package}/{kind}.py": re.sub(rf"\b{example}\b", cls, (TEMPLATES / f"{kind}.py").read_text()),
        f"{package}/recipes/{name}.yaml": render("recipe.yaml.template", **values,
                                                 parts=render(f"{kind}.yaml.template", **values)),
        f"tests/test_{package}.py": render("test.py.template", **values),
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
    parser.add_argument("name", type=str, help="the distribution (and recipe) name, e.g. conv-mixer; its import "
                                               "name has underscores for hyphens (conv_mixer)")
    parser.add_argument("--kind", type=Literal[tuple(SCAFFOLDS)], default="backbone",
                        help="the kind of component the package starts with")
    parser.add_argument("--directory", type=str, default=".", help="where to make the package folder")
    args = parser.parse_args(argv)
    target = scaffold(args.name, args.kind, Path(args.directory), registry)
    print(f"created the {args.kind} plugin {target}/ ({class_name(args.name)} in {package_name(args.name)}/{args.kind}.py)\n"
          f"next:  pip install -e {target} && pytest {target} && patchworld fit --config {args.name}")
    return 0
