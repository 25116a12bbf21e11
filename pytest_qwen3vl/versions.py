"""Installed library versions, read from package metadata without importing the libraries."""

from __future__ import annotations

import importlib.metadata

ABSENT = "absent"
# The libraries an export depends on: a change of any of them keys a new export.
EXPORT_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")
# The optional runtimes a file's measurement may have run on: their versions key what is kept of it.
RUNTIME_LIBRARIES = ("openvino", "onnxruntime-genai")


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(names: tuple[str, ...] = EXPORT_LIBRARIES) -> dict[str, str]:
    """``{name: version}`` for each library, ``"absent"`` where it is not installed."""
    return {name: installed_version(name) or ABSENT for name in names}


def transformers_version() -> str | None:
    """The installed transformers version."""
    return installed_version("transformers")

