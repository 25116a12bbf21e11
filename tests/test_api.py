"""The public API resolves lazily: every name imports, and ``import pytest_qwen3vl`` costs no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_qwen3vl


@pytest.mark.parametrize("name", pytest_qwen3vl.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(pytest_qwen3vl, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pytest_qwen3vl.nope


def test_package_import_is_light() -> None:
    code = ("import sys, pytest_qwen3vl; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
