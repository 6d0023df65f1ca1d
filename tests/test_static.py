"""The static checks STYLE.md asks for, run by the suite so CI enforces them.

ruff (lint and format) over the library, tests and benchmarks, and
mypy --strict (setup.cfg) over grpyc/: a regression fails here, not in review.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ["grpyc", "tests", "bench", "examples"]


def run(*argv):
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_ruff_lint_is_clean():
    result = run("ruff", "check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = run("ruff", "format", "--check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean(tmp_path):
    config = (ROOT / "setup.cfg").read_text()
    assert "strict = True" in config  # the check below is the strict one
    result = run("mypy", "--cache-dir", str(tmp_path / "cache"), "grpyc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
