"""pytest-qwen3vl: check a patched Qwen3-VL modeling file against the export report it comes with.

The public API is imported lazily, so ``import pytest_qwen3vl`` costs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Grid": "pytest_qwen3vl.settings",
    "Settings": "pytest_qwen3vl.settings",
    "ModelSpec": "pytest_qwen3vl.models",
    "VisionPair": "pytest_qwen3vl.models",
    "build_pair": "pytest_qwen3vl.models",
    "resolve_config": "pytest_qwen3vl.models",
    "deepstack_export_flag": "pytest_qwen3vl.models",
    "VisionInputs": "pytest_qwen3vl.inputs",
    "make_inputs": "pytest_qwen3vl.inputs",
    "import_modeling_file": "pytest_qwen3vl.sources",
    "installed_golden_path": "pytest_qwen3vl.sources",
    "reference_modified_text": "pytest_qwen3vl.sources",
    "CATALOGUE": "pytest_qwen3vl.catalogue",
    "check_one_diff": "pytest_qwen3vl.sourcediff",
    "deepstack_truth_table": "pytest_qwen3vl.sourcediff",
    "describe_disagreements": "pytest_qwen3vl.sourcediff",
    "EXPECTED_TABLE": "pytest_qwen3vl.sourcediff",
    "count_deepstack_calls": "pytest_qwen3vl.tracing",
    "trace_hazards": "pytest_qwen3vl.tracing",
    "export_vision": "pytest_qwen3vl.export",
    "ExportFailed": "pytest_qwen3vl.export",
    "graph_signature": "pytest_qwen3vl.graph",
    "graph_digest": "pytest_qwen3vl.graph",
    "ort_session": "pytest_qwen3vl.graph",
    "run_pooled": "pytest_qwen3vl.graph",
    "parity": "pytest_qwen3vl.graph",
    "ArtifactCache": "pytest_qwen3vl.cache",
    "write_report": "pytest_qwen3vl.report",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pytest_qwen3vl' has no attribute {name!r}")
