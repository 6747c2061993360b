"""The course (docs/course/): every chapter found there has a grader that passes its reference solutions and
fails every one of its tests on the student's stubs; `patchworld course check` answers bad input with one line;
and (marked slow: `python -m pytest -m slow`) every chapter's script finishes its --quick smoke run."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from patchworld.course import chapters, exercise_functions, grade, load_module

CHAPTERS = chapters()
FILES = ("README.md", "exercises.py", "solutions.py", "test_grader.py", "run.py")
by_chapter = pytest.mark.parametrize("chapter", list(CHAPTERS.values()), ids=[p.name for p in CHAPTERS.values()])


def test_the_course_has_its_seven_chapters():
    assert list(CHAPTERS) == list(range(1, 8)), [p.name for p in CHAPTERS.values()]


@by_chapter
def test_grader_passes_the_solutions_and_fails_every_test_on_the_stubs(chapter):
    missing = [name for name in FILES if not (chapter / name).is_file()]
    assert not missing, f"{chapter.name} lacks {missing}"
    functions = exercise_functions(load_module(chapter / "solutions.py"))
    assert 2 <= len(functions) <= 4, f"{chapter.name} has {len(functions)} exercises: {list(functions)}"
    solved = grade(chapter, chapter / "solutions.py")
    assert solved and all(o.passed for o in solved), [f"{o.test}: {o.message}" for o in solved if not o.passed]
    stubs = grade(chapter, chapter / "exercises.py")
    assert {o.test for o in stubs} == {o.test for o in solved}
    assert not any(o.passed for o in stubs), f"tests that pass on the stubs: {[o.test for o in stubs if o.passed]}"


@by_chapter
def test_page_shows_the_scripts_picture(chapter):
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (chapter / "README.md").read_text())
    assert pictures, f"{chapter.name}/README.md embeds no picture"
    missing = [name for name in pictures if not (chapter / name).is_file()]
    assert not missing, f"{chapter.name}/README.md shows {missing}, which run.py has not written yet"


def student_file(tmp_path, text: str):
    path = tmp_path / "mine.py"
    path.write_text(text)
    return path


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_check_grades_the_solutions_from_any_directory(run_cli, capsys):
    assert run_cli("course", "check", "1", "--solutions") == 0  # run_cli works in a temporary directory
    assert "7 of 7 tests pass" in capsys.readouterr().out


def test_check_names_the_mistake(run_cli, capsys, tmp_path):
    solutions = (CHAPTERS[1] / "solutions.py").read_text()
    wrong = solutions.replace("x.permute(0, 2, 4, 6, 1, 3, 5, 7)", "x.permute(0, 4, 6, 2, 1, 3, 5, 7)")  # (h, w, t)
    assert run_cli("course", "check", "1", "--file", student_file(tmp_path, wrong)) == 1
    out = capsys.readouterr().out
    assert "FAIL patchify" in out and "wrong token order: expected time-major (t, h, w) order, got (h, w, t)" in out
    assert "ok   grid_positions" in out


def test_check_refuses_a_syntax_error(run_cli, capsys, tmp_path):
    path = student_file(tmp_path, "import torch\n\n\ndef patchify(video, patch):\n    return video[\n")
    assert run_cli("course", "check", "1", "--file", path) == 2
    assert error_line(capsys).startswith(f"patchworld: error: {path}:5: syntax error")


def test_check_refuses_a_wrong_signature(run_cli, capsys, tmp_path):
    solutions = (CHAPTERS[1] / "solutions.py").read_text()
    wrong = solutions.replace("def grid_positions(t: int, h: int, w: int)", "def grid_positions(t: int, h: int)")
    line = wrong.splitlines().index(next(s for s in wrong.splitlines() if s.startswith("def grid_positions"))) + 1
    assert run_cli("course", "check", "1", "--file", student_file(tmp_path, wrong)) == 2
    assert error_line(capsys) == (f"patchworld: error: {tmp_path / 'mine.py'}:{line}: function grid_positions has the "
                                  "wrong signature grid_positions(t, h); expected grid_positions(t, h, w)")


def test_check_refuses_a_missing_function(run_cli, capsys, tmp_path):
    assert run_cli("course", "check", "2", "--file", student_file(tmp_path, "def causal_conv3d(x):\n    pass\n")) == 2
    assert "function causal_conv3d has the wrong signature" in error_line(capsys)
    path = student_file(tmp_path, "")
    assert run_cli("course", "check", "3", "--file", path) == 2
    assert error_line(capsys) == f"patchworld: error: {path}: function noised(x0, noise, t) is missing"


def test_check_lists_the_chapters_for_an_unknown_one(run_cli, capsys):
    assert run_cli("course", "check", "99") == 2
    assert error_line(capsys).startswith("patchworld: error: no chapter 99; the chapters are 1 (ch01_patches), "
                                         "2 (ch02_vae), 3 (ch03_flow)")


def test_check_without_pytest_says_install_the_dev_extra(run_cli, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytest", None)  # `import pytest` now fails
    assert run_cli("course", "check", "1", "--solutions") == 2
    assert "install the dev extra" in error_line(capsys)


def test_list_names_every_chapter(run_cli, capsys):
    assert run_cli("course", "list") == 0
    out = capsys.readouterr().out
    assert all(chapter.name in out for chapter in CHAPTERS.values())


@pytest.mark.slow
@by_chapter
def test_script_quick_run_writes_its_picture(chapter, tmp_path):
    done = subprocess.run([sys.executable, str(chapter / "run.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("*.png")), f"{chapter.name}/run.py --quick wrote no picture: {done.stdout[-500:]}"
