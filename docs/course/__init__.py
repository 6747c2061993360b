"""The patchworld course (`patchworld course list`): one folder per chapter, each with its page (README.md),
its script (run.py), the student's file (exercises.py), the reference solutions (solutions.py) and the
grader (test_grader.py, run by `patchworld course check N`)."""
