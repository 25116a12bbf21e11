"""Graph signatures of the exports as syrupy snapshots, so any change to what an export promises shows
up as a line diff.

The contract (names, element types, dims, opset) is the same with any torch, onnx or transformers
version (4.57.6 and 5.23.0 give the same one) and ships with the suite, one file per case; the
lowering (operator histogram, initializers by module) is stored per torch, onnx and transformers
version and skipped on others. Both are written with ``--snapshot-update``.
"""

from __future__ import annotations

import pytest

from pytest_qwen3vl.plugin.snapshots import contract_document, describe_mismatch, lowering_document

pytestmark = pytest.mark.qwen3vl_export

CASES = [
    pytest.param("golden", "all", id="golden-all", marks=pytest.mark.qwen3vl_claim("golden-onnx-outputs")),
    pytest.param("modified", "pooled", id="modified-pooled", marks=pytest.mark.qwen3vl_claim("export-pooled-embeds")),
]
LOWERED = [
    pytest.param("golden", "all", id="golden-all"),
    pytest.param("modified", "pooled", id="modified-pooled"),
]


@pytest.mark.parametrize(("which", "wrapper"), CASES)
def test_contract(which, wrapper, qwen3vl_export, qwen3vl_grid, qwen3vl_snapshot):
    document = contract_document(qwen3vl_export.signature(qwen3vl_export(which, qwen3vl_grid, wrapper)))
    assert qwen3vl_snapshot == document, f"the export's contract changed: {describe_mismatch(qwen3vl_snapshot)}"


@pytest.mark.qwen3vl_claim("export-graph-vs-golden")
@pytest.mark.parametrize(("which", "wrapper"), LOWERED)
def test_lowering(which, wrapper, qwen3vl_export, qwen3vl_grid, qwen3vl_lowering_snapshot):
    document = lowering_document(qwen3vl_export.signature(qwen3vl_export(which, qwen3vl_grid, wrapper)))
    assert qwen3vl_lowering_snapshot == document, (
        f"the exported graph changed: {describe_mismatch(qwen3vl_lowering_snapshot)}"
    )
