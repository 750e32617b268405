"""The code passes `ruff check .` with the rules pyproject.toml selects (pyflakes' checks and
syntax errors) and mypy with its `[tool.mypy]` settings (the product packages), so `make test`
(and CI, which runs it) fails on an undefined name, an unused import or a type error like on any
other failing test."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes():
    # About a minute on a cold cache (CI's fresh clone, 2 cores), seconds on a warm one.
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the test extra: pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=480)
    assert result.returncode == 0, result.stdout + result.stderr
