"""The habits CI enforces through the README's test command: ruff clean, mypy clean, a typed package.

Both tools come with the ``test`` extra (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    result = run_tool("ruff", "check", "--output-format=concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    """``[tool.mypy]`` in pyproject.toml: untyped or wrongly typed definitions fail here."""
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_ships_its_types() -> None:
    assert (REPO / "pytest_qwen3vl" / "py.typed").is_file()
