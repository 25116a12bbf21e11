"""The public API resolves lazily: every name imports from the module the map names, editors see the
same names, and ``import pytest_qwen3vl`` costs no torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

import pytest_qwen3vl
from tests.conftest import REPO


@pytest.mark.parametrize("name", pytest_qwen3vl.__all__)
def test_every_public_name_resolves_to_its_module(name: str) -> None:
    module = importlib.import_module(pytest_qwen3vl._API[name])
    assert getattr(pytest_qwen3vl, name) is getattr(module, name)


def test_all_lists_the_map_and_the_type_checking_imports_match() -> None:
    """``__all__`` is a literal for linters; the TYPE_CHECKING block gives editors the same names."""
    tree = ast.parse((REPO / "pytest_qwen3vl" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    typed = {(node.module, alias.name) for node in block.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    assert sorted(pytest_qwen3vl.__all__) == sorted(pytest_qwen3vl._API)
    assert typed == {(module, name) for name, module in pytest_qwen3vl._API.items()}


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pytest_qwen3vl.nope


def test_package_import_is_light() -> None:
    code = ("import sys, pytest_qwen3vl; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_shares_one_base() -> None:
    from pytest_qwen3vl import errors

    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(classes) >= 8
    assert all(issubclass(cls, errors.Qwen3VLError) for cls in classes)
