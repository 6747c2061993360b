"""The course (docs/course/): find its chapters, grade a student's file, and the helpers graders and chapter
scripts share.

``patchworld course list`` names the chapters; ``patchworld course check N [--file PATH] [--solutions]`` grades
chapter N's ``exercises.py`` (or PATH, or the reference ``solutions.py``) with the chapter's ``test_grader.py``:
the file is first checked to compile and to define every function of ``solutions.py`` with the same signature
(one line naming the file, line and function otherwise), then pytest runs the grader in-process and the result
is one line per exercise, with each failure's message. Exit 0 when every test passes, else 1.

A chapter is a folder ``chNN_slug/`` of the course package ``patchworld_course`` (``docs/course/`` in a
checkout, shipped as package data by a regular install) holding README.md, exercises.py, solutions.py,
test_grader.py and run.py.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import os
import re
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from unittest import mock

import torch
from pytorch_lightning import Callback, Trainer

from .contracts import described
from .errors import PatchworldError

CHAPTER = re.compile(r"ch(\d\d)_\w+")


# ---- finding chapters and loading their files -------------------------------------------------------------
def course_root() -> Path:
    """The course folder: the installed ``patchworld_course`` package, else ``docs/course`` of this checkout."""
    spec = importlib.util.find_spec("patchworld_course")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(__file__).resolve().parent.parent / "docs" / "course"
    if not checkout.is_dir():
        raise PatchworldError("the course is not installed: reinstall patchworld (pip install -e .) from a checkout")
    return checkout


def chapters() -> dict[int, Path]:
    """Chapter number -> its folder, in order."""
    found = {int(m.group(1)): p for p in course_root().iterdir() if p.is_dir() and (m := CHAPTER.fullmatch(p.name))}
    return dict(sorted(found.items()))


def find_chapter(number: int) -> Path:
    """The folder of chapter `number`, or a PatchworldError listing the valid ones."""
    found = chapters()
    if number not in found:
        listed = ", ".join(f"{n} ({p.name})" for n, p in found.items())
        raise PatchworldError(f"no chapter {number}; the chapters are {listed}")
    return found[number]


def title(chapter: Path) -> str:
    """The first heading of a chapter's README.md."""
    readme = chapter / "README.md"
    lines = readme.read_text().splitlines() if readme.is_file() else []
    return next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), chapter.name)


def load_module(path: str | Path) -> ModuleType:
    """Import a course file (a student's, the solutions, a chapter's adapters) as a fresh module, registered
    under a name of its own (``course_<chapter>_<stem>``) so dataclasses and pickling find it."""
    path = Path(path).resolve()
    name = f"course_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def exercise_functions(module: ModuleType) -> dict[str, Callable]:
    """The public functions a module defines itself (not those it imports), in file order."""
    own = [f for name, f in vars(module).items()
           if inspect.isfunction(f) and f.__module__ == module.__name__ and not name.startswith("_")]
    return {f.__name__: f for f in sorted(own, key=lambda f: f.__code__.co_firstlineno)}


def check_student_file(path: Path, solutions: Path) -> ModuleType:
    """Load a student's file, or raise one line naming the file (and line, and function) when it does not
    compile, fails to import, or lacks a function of `solutions` or defines it with another signature."""
    if not path.is_file():
        raise PatchworldError(f"{path}: no such file")
    try:
        ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        raise PatchworldError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    try:
        module = load_module(path)
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        line = next((f.lineno for f in reversed(frames) if Path(f.filename) == path.resolve()), "?")
        raise PatchworldError(f"{path}:{line}: importing it failed: {type(error).__name__}: {error}") from None
    student = exercise_functions(module)
    for name, reference in exercise_functions(load_module(solutions)).items():
        expected = _parameters(reference)
        if name not in student:
            raise PatchworldError(f"{path}: function {name}{expected} is missing")
        if _parameters(student[name]) != expected:
            raise PatchworldError(f"{path}:{student[name].__code__.co_firstlineno}: function {name} has the wrong "
                                  f"signature {name}{_parameters(student[name])}; expected {name}{expected}")
    return module


def _parameters(function: Callable) -> inspect.Signature:
    """A function's parameters (names, kinds, defaults) without annotations."""
    signature = inspect.signature(function)
    return signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                         for p in signature.parameters.values()],
                             return_annotation=inspect.Signature.empty)


# ---- grading ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One grader test: its name, whether it passed, and the first line(s) of its failure."""

    test: str
    passed: bool
    message: str = ""


class _Collector:
    """A pytest plugin that keeps each test's outcome and failure message (instead of a terminal report)."""

    def __init__(self, student: Path):
        self.student, self.outcomes = student, {}

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.outcomes[report.nodeid or "collection"] = Outcome("collection", False, self.message(report))

    def pytest_runtest_logreport(self, report) -> None:
        name = report.nodeid.split("::", 1)[-1]
        if report.failed and (name not in self.outcomes or self.outcomes[name].passed):  # the first failure
            self.outcomes[name] = Outcome(name, False, self.message(report))
        elif report.when == "call" or report.skipped:
            self.outcomes.setdefault(name, Outcome(name, report.passed, "skipped" if report.skipped else ""))

    def message(self, report) -> str:
        """The failure in at most two lines: the exception's message, and where in the student's file it
        was raised when it came from there."""
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
        text = re.sub(r"^(AssertionError|Failed): ", "", text)
        text = re.sub(r"^NotImplementedError: ", "not implemented yet: ", text)
        lines = text.splitlines()
        # pytest's assertion introspection after a message ("assert False", " +  where ...") adds nothing to it
        lines = [line for line in lines[:next((i for i, line in enumerate(lines) if line.startswith("assert ")),
                                              len(lines))] if line.strip()][:2]
        if crash is not None and Path(crash.path) == self.student and not text.startswith("not implemented"):
            lines.append(f"(raised at {self.student}:{crash.lineno})")
        return "\n".join(lines)


def grade(chapter: Path, student: Path) -> list[Outcome]:
    """Run `chapter`'s test_grader.py on the module `student` with pytest (in-process on one torch thread,
    quiet, no cache): one `Outcome` per test."""
    try:
        import pytest
    except ImportError:
        raise PatchworldError("grading needs pytest: install the dev extra (pip install -e '.[dev]')") from None
    collector = _Collector(student.resolve())
    arguments = [str(chapter / "test_grader.py"), "-p", "no:cacheprovider", "-p", "no:terminal",
                 # rootdir the course: importlib mode then names each grader by its chapter (ch01_patches.test_grader),
                 # so graders of several chapters graded in one process never collide
                 "--rootdir", str(chapter.parent), "--import-mode=importlib",
                 "-o", "addopts=", "-W", "ignore::DeprecationWarning"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the graders' tensors are tiny: more threads only add synchronisation
    try:
        with mock.patch.dict(os.environ, {"PATCHWORLD_COURSE_FILE": str(student.resolve())}):
            pytest.main(arguments, plugins=[collector])
    finally:
        torch.set_num_threads(threads)
    return list(collector.outcomes.values())


def group_by_exercise(outcomes: list[Outcome], functions: list[str]) -> dict[str, list[Outcome]]:
    """Tests by the exercise their name starts with (``test_patchify_order`` -> patchify); the others
    (whole-framework tests) under "in the framework"."""
    groups: dict[str, list[Outcome]] = {name: [] for name in functions}
    for outcome in outcomes:
        owner = max((f for f in functions if outcome.test.startswith(f"test_{f}")), key=len, default="in the framework")
        groups.setdefault(owner, []).append(outcome)
    return {name: tests for name, tests in groups.items() if tests}


def check(number: int, file: str | None = None, solutions: bool = False) -> int:
    """Grade chapter `number` and print one line per exercise (and each failure); 0 when all tests pass."""
    chapter = find_chapter(number)
    target = Path(file) if file else chapter / ("solutions.py" if solutions else "exercises.py")
    reference = chapter / "solutions.py"
    check_student_file(target, reference)
    outcomes = grade(chapter, target)
    if not outcomes:
        raise PatchworldError(f"{chapter / 'test_grader.py'}: no tests ran")
    print(f"chapter {number} ({chapter.name}): grading {target}")
    functions = list(exercise_functions(load_module(reference)))
    for name, tests in group_by_exercise(outcomes, functions).items():
        passed = sum(t.passed for t in tests)
        print(f"  {'ok  ' if passed == len(tests) else 'FAIL'} {name:<22} {passed}/{len(tests)} tests pass")
        failures: dict[str, list[str]] = {}  # message -> the tests that failed with it (a stub: one message)
        for test in tests:
            if not test.passed:
                failures.setdefault(test.message or "(no message)", []).append(test.test)
        for message, names in failures.items():
            first, *rest = message.splitlines()
            print(f"         {', '.join(names)}: {first}")
            for line in rest:
                print(f"           {line}")
    passed = sum(t.passed for t in outcomes)
    print(f"{passed} of {len(outcomes)} tests pass" + ("" if passed == len(outcomes) else
          f"; edit {target} and run `patchworld course check {number}` again"))
    return 0 if passed == len(outcomes) else 1


class _Parser(argparse.ArgumentParser):
    """argparse with a bad option as one line (a PatchworldError), like every patchworld command."""

    def error(self, message: str):
        raise PatchworldError(f"{self.prog}: {message}")


def course_command(registry: Any, argv: list[str]) -> int:
    """``patchworld course list`` | ``patchworld course check N [--file PATH] [--solutions]``."""
    parser = _Parser(prog="patchworld course", description="the course's chapters and their graders")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,check}")
    commands.add_parser("list", help="the chapters")
    checking = commands.add_parser("check", help="grade a chapter's exercises")
    checking.add_argument("chapter", type=int, help="the chapter number, e.g. 1")
    checking.add_argument("--file", help="the file to grade (default: the chapter's exercises.py)")
    checking.add_argument("--solutions", action="store_true", help="grade the reference solutions.py instead")
    args = parser.parse_args(argv)
    if args.command == "list":
        for number, chapter in chapters().items():
            print(f"  {number:>2}  {chapter.name:<16} {title(chapter)}")
        print(f"the course is in {course_root()}; grade a chapter with `patchworld course check N`")
        return 0
    if args.file and args.solutions:
        raise PatchworldError("give --file or --solutions, not both")
    return check(args.chapter, args.file, args.solutions)


# ---- what graders share -------------------------------------------------------------------------------------
def expect(what: str, got: Any, expected: torch.Tensor, atol: float = 1e-5,
           mistakes: dict[str, torch.Tensor] | None = None, hint: str = "") -> None:
    """Fail (AssertionError, one line) unless `got` is a tensor of `expected`'s shape, dtype family and values.
    `mistakes` maps a description of a known mistake to the output it produces, so a match names it."""
    if not torch.is_tensor(got):
        raise AssertionError(f"{what}: expected a tensor of shape {tuple(expected.shape)}, got {described(got)}")
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
                             + (f"; {hint}" if hint else ""))
    if got.is_floating_point() != expected.is_floating_point():
        raise AssertionError(f"{what}: expected a {str(expected.dtype).removeprefix('torch.')} tensor, got "
                             f"{str(got.dtype).removeprefix('torch.')}")
    if close(got, expected, atol):
        return
    for mistake, output in (mistakes or {}).items():
        if output.shape == got.shape and close(got, output, atol):
            raise AssertionError(f"{what}: {mistake}")
    error = float((got.double() - expected.double()).abs().nan_to_num(float("inf")).max())
    raise AssertionError(f"{what}: values differ from the expected ones by up to {error:.3g}"
                         + (f"; {hint}" if hint else ""))


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    """Same values up to `atol` (and a relative 1e-4)."""
    return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4))


class LossLog(Callback):
    """A Lightning callback that keeps every training step's loss."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def train(world, datamodule, steps: int, progress: bool = False) -> list[float]:
    """Train `world` (a `WorldModel`) for `steps` optimizer steps with a real Lightning Trainer on the CPU
    in fp32, with no logger and no checkpoints; returns each step's training loss."""
    log = LossLog()
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, precision="32-true", logger=False,
                      enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=[log], log_every_n_steps=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|limit_val_batches|max_epochs).*")
        trainer.fit(world, datamodule=datamodule)
    return log.losses


# ---- what chapter scripts share -------------------------------------------------------------------------------
def script_options(script: str, description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a chapter script's options (--student, --quick, --out DIR, --threads N), set the torch threads and
    load the functions it uses: ``.functions`` is the chapter's solutions.py, or with --student its
    exercises.py; ``.out`` the folder the picture goes to (default: the chapter's own)."""
    chapter = Path(script).resolve().parent
    parser = argparse.ArgumentParser(prog=f"python {chapter.name}/run.py", description=description)
    parser.add_argument("--student", action="store_true", help="use your exercises.py instead of solutions.py")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (a rough picture)")
    parser.add_argument("--out", type=Path, default=chapter, help="where to write the picture")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the chapters' models are "
                        "small, and one thread is several times faster than two on a CPU other jobs share)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.functions = load_module(chapter / ("exercises.py" if args.student else "solutions.py"))
    return args


def save_figure(figure, path: Path, dpi: int = 72) -> Path:
    """Write a matplotlib figure as a small PNG (its colours reduced to a 256-colour palette, which keeps a
    chapter's picture commit-sized)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    return path
