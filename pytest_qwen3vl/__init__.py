"""pytest-qwen3vl: check a patched Qwen3-VL modeling file against the export report it comes with.

The public API is imported lazily, so ``import pytest_qwen3vl`` costs no torch. The package reads
in the direction the data flows: ``source`` (the golden and modified files, their diff), ``model``
(configs, checkpoints, the shared-weight pair, inputs, float64 references), ``onnxfile`` (reading a
file: structure, interface, weight type, signature), ``export`` (making files), ``store`` (the
verified cache), ``runtimes`` (running files), ``judge`` (tolerances, the sweep, a user's file, drift)
and ``plugin`` (pytest hooks, fixtures, settings, claims, reports, snapshots). Each imports only
those before it; ``errors``, ``versions`` and ``metrics`` sit below them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

_API = {
    "Grid": "pytest_qwen3vl.model.grids",
    "Settings": "pytest_qwen3vl.plugin.settings",
    "ModelSpec": "pytest_qwen3vl.model.configs",
    "resolve_config": "pytest_qwen3vl.model.configs",
    "VisionPair": "pytest_qwen3vl.model.build",
    "build_pair": "pytest_qwen3vl.model.build",
    "deepstack_export_flag": "pytest_qwen3vl.model.build",
    "VisionInputs": "pytest_qwen3vl.model.inputs",
    "make_inputs": "pytest_qwen3vl.model.inputs",
    "import_modeling_file": "pytest_qwen3vl.source.files",
    "installed_golden_path": "pytest_qwen3vl.source.files",
    "reference_modified_text": "pytest_qwen3vl.source.files",
    "CATALOGUE": "pytest_qwen3vl.plugin.catalogue",
    "check_one_diff": "pytest_qwen3vl.source.diff",
    "deepstack_truth_table": "pytest_qwen3vl.source.diff",
    "describe_disagreements": "pytest_qwen3vl.source.diff",
    "EXPECTED_TABLE": "pytest_qwen3vl.source.diff",
    "count_deepstack_calls": "pytest_qwen3vl.export.tracing",
    "trace_hazards": "pytest_qwen3vl.export.tracing",
    "export_vision": "pytest_qwen3vl.export.builder",
    "ExportFailed": "pytest_qwen3vl.errors",
    "Qwen3VLError": "pytest_qwen3vl.errors",
    "graph_signature": "pytest_qwen3vl.onnxfile.signature",
    "graph_digest": "pytest_qwen3vl.onnxfile.signature",
    "ort_session": "pytest_qwen3vl.runtimes.onnxruntime",
    "run_pooled": "pytest_qwen3vl.runtimes.onnxruntime",
    "parity": "pytest_qwen3vl.metrics",
    "ArtifactCache": "pytest_qwen3vl.store.cache",
    "write_report": "pytest_qwen3vl.plugin.markdown",
}

__all__ = [
    "CATALOGUE",
    "EXPECTED_TABLE",
    "ArtifactCache",
    "ExportFailed",
    "Grid",
    "ModelSpec",
    "Qwen3VLError",
    "Settings",
    "VisionInputs",
    "VisionPair",
    "build_pair",
    "check_one_diff",
    "count_deepstack_calls",
    "deepstack_export_flag",
    "deepstack_truth_table",
    "describe_disagreements",
    "export_vision",
    "graph_digest",
    "graph_signature",
    "import_modeling_file",
    "installed_golden_path",
    "make_inputs",
    "ort_session",
    "parity",
    "reference_modified_text",
    "resolve_config",
    "run_pooled",
    "trace_hazards",
    "write_report",
]

if TYPE_CHECKING:  # editors and type checkers see the names the lazy loader gives
    from pytest_qwen3vl.errors import ExportFailed, Qwen3VLError
    from pytest_qwen3vl.export.builder import export_vision
    from pytest_qwen3vl.export.tracing import count_deepstack_calls, trace_hazards
    from pytest_qwen3vl.metrics import parity
    from pytest_qwen3vl.model.build import VisionPair, build_pair, deepstack_export_flag
    from pytest_qwen3vl.model.configs import ModelSpec, resolve_config
    from pytest_qwen3vl.model.grids import Grid
    from pytest_qwen3vl.model.inputs import VisionInputs, make_inputs
    from pytest_qwen3vl.onnxfile.signature import graph_digest, graph_signature
    from pytest_qwen3vl.plugin.catalogue import CATALOGUE
    from pytest_qwen3vl.plugin.markdown import write_report
    from pytest_qwen3vl.plugin.settings import Settings
    from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_pooled
    from pytest_qwen3vl.source.diff import EXPECTED_TABLE, check_one_diff, deepstack_truth_table, describe_disagreements
    from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path, reference_modified_text
    from pytest_qwen3vl.store.cache import ArtifactCache


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pytest_qwen3vl' has no attribute {name!r}")
