"""Command-line parsing and the one line a person reads when something fails.

* `CommandParser` — the parser of every patchworld command other than Lightning's (``export``, ``compare``,
  plugin commands); `PatchworldParser` — Lightning's, for ``fit/validate/test/predict``. Both refuse
  abbreviated options and turn a parse error into a `PatchworldError` whose message names the recipe key, the
  component and the valid component names.
* `one_line(message)` folds jsonargparse's nested explanation to one line; `describe(error)` does the same for
  any exception; `guarded(command, argv)` runs a command and prints a failure as ``patchworld: error: ...``.
"""
from __future__ import annotations

import contextvars
import difflib
import os
import re
import sys
import typing

from jsonargparse import ArgumentParser
from jsonargparse import _typehints  # no public API exposes an action's type hint or the class-name lookup
from pytorch_lightning.cli import LightningArgumentParser

from .errors import PatchworldError
from .plugins import KINDS, Registry, load_plugins

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


def resolve_class_name(expected: type | tuple[type, ...], name: str) -> str:
    """The import path of the component a recipe names `name` where it expects a class of `expected`.

    For patchworld's component kinds the registry of loaded, healthy plugins is the only resolver: a short
    name is the class registered under it, or stays unresolved (the parse error then lists the valid names),
    so a class of a skipped plugin, or one no hook registered, cannot be named, and a skipped plugin's class
    that shares a registered name is no ambiguity. A full import path (``my_module.MyBackbone``) is imported
    as written; other types (optimizers, callbacks) are left to jsonargparse's own lookup."""
    bases = expected if isinstance(expected, tuple) else (expected,)
    kinds = [kind for kind, base in KINDS.items() for hint in bases if isinstance(hint, type) and issubclass(hint, base)]
    if "." in name or not kinds:
        return _jsonargparse_lookup(expected, name)
    registry = load_plugins()
    for kind in kinds:
        if name in registry.components[kind]:
            cls = registry.components[kind][name][0]
            return f"{cls.__module__}.{cls.__qualname__}"
    return name


_jsonargparse_lookup = _typehints.resolve_class_path_by_name
_typehints.resolve_class_path_by_name = resolve_class_name  # every class name jsonargparse meets comes here


def integers_first(parser: ArgumentParser) -> None:
    """Lightning types batch limits as ``float | int``, so ``--trainer.limit_val_batches 1`` would become 1.0
    (100% of the batches); put ``int`` first so whole numbers count batches and decimals are fractions."""
    for action in parser._actions:
        hint = getattr(action, "_typehint", None) if isinstance(action, _typehints.ActionTypeHint) else None
        args = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else ()
        if float in args and int in args and args.index(float) < args.index(int):
            action._typehint = typing.Union[tuple([int] + [a for a in args if a is not int])]


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
            skipped = f"; skipped plugins: {', '.join(map(repr, registry.failures))} (`patchworld plugins` says why)"
            return (f"unknown {kind} {unknown.group(1)!r} at {key}; available {kind}s: {names}"
                    f"{skipped if registry.failures else ''}")
        if "Does not validate against any of the Union subtypes" in message and "class_path" not in message:
            return f"invalid {kind} at {key} (available {kind}s: {names})"
    return message


_DEBUG = contextvars.ContextVar("patchworld_debug", default=False)


def debugging() -> bool:
    """Whether the running command was given ``--debug`` (or PATCHWORLD_DEBUG=1 is set): then failures raise
    with their traceback instead of becoming one line (commands that set a failing part aside ask this too)."""
    return _DEBUG.get() or os.environ.get("PATCHWORLD_DEBUG", "") not in ("", "0")


def guarded(command, argv: list[str]) -> int:
    """Run `command(argv)`; any failure becomes one line ``patchworld: error: ...`` on stderr (exit 2 for the
    user's input, 1 otherwise), or its traceback with ``--debug`` / ``PATCHWORLD_DEBUG=1``."""
    token = _DEBUG.set("--debug" in argv or debugging())
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return command(argv)
    except KeyboardInterrupt:
        print("patchworld: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debugging():
            raise
        print(f"patchworld: error: {describe(error)}", file=sys.stderr)
        user_error = find_cause(error, PatchworldError) or getattr(find_cause(error, OSError), "filename", None)
        return 2 if user_error else 1
    finally:
        _DEBUG.reset(token)


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
