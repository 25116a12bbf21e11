"""The self-tests' one reader of the claims table reads what ``render_table`` writes: every row, its
continuation lines, and nothing from outside the table."""

from __future__ import annotations

from pytest_qwen3vl.plugin.catalogue import CATALOGUE
from pytest_qwen3vl.plugin.claims import ClaimRow, render_table
from tests.helpers import claim_row, claim_rows, claim_status, claim_statuses

FIRST, SECOND, THIRD = CATALOGUE[0], CATALOGUE[1], CATALOGUE[2]


def _output() -> str:
    rows = [
        ClaimRow(FIRST, "holds", ["1x24x24: max abs 0"]),
        ClaimRow(SECOND, "fails", ["a.onnx: serves 0 of 2 grids", "b.onnx: refuses 1x16x16 (ONNX Runtime: x)"]),
        ClaimRow(THIRD),
    ]
    before = [f"E   AssertionError: {THIRD.id} fails here, in a failure message", "=== qwen3vl claims ==="]
    after = ["qwen3vl claims: 1 holds, 1 fails, 1 not run", f"  9 {FIRST.id}  fails  not a row of the table"]
    return "\n".join([*before, *render_table(rows), *after])


def test_rows_are_read_with_their_continuation_lines() -> None:
    output = _output()
    assert list(claim_rows(output)) == [FIRST.id, SECOND.id, THIRD.id]
    first_line, continuation = claim_row(output, SECOND.id).split(" | ")
    assert first_line.endswith("a.onnx: serves 0 of 2 grids"), first_line
    assert continuation.strip() == "b.onnx: refuses 1x16x16 (ONNX Runtime: x)", continuation
    assert claim_row(output, FIRST.id).endswith("1x24x24: max abs 0")


def test_statuses_come_from_the_table_alone() -> None:
    output = _output()
    assert claim_statuses(output) == {FIRST.id: "holds", SECOND.id: "fails", THIRD.id: "not run"}
    assert claim_status(output, THIRD.id) == "not run"
