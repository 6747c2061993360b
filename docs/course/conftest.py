"""The graders' one fixture: `exercises`, the student's module for the chapter being graded.

`patchworld course check N` sets PATCHWORLD_COURSE_FILE to the file it grades (the chapter's `exercises.py`,
its `solutions.py` with --solutions, or any --file). Run by hand:
    PATCHWORLD_COURSE_FILE=docs/course/ch01_patches/solutions.py python -m pytest docs/course/ch01_patches
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from patchworld.course import load_module


@pytest.fixture(scope="module")
def exercises(request):
    """The module under grading: PATCHWORLD_COURSE_FILE, else the grader's own chapter's exercises.py."""
    path = Path(os.environ.get("PATCHWORLD_COURSE_FILE") or Path(request.path).parent / "exercises.py")
    return load_module(path)
