"""The eager claims run on the sweep's grids whatever ``--qwen3vl-grid`` says, and name the grids.

A fork that swaps H and W in the position-embedding interpolation computes golden's numbers on every
square grid: judged on the default 1x24x24 alone, runtime-equivalence would say holds.
"""

from __future__ import annotations

from pathlib import Path

from pytest_qwen3vl.model.grids import SWEEP
from tests.conftest import RunSuite
from tests.model_variants import POS_EMBED_H_W_SWAPPED
from tests.test_model_claims import claim_rows, glob_literal


def test_square_grid_run_still_catches_a_h_w_swap(run_suite: RunSuite, tmp_path: Path) -> None:
    variant = POS_EMBED_H_W_SWAPPED
    modified = variant.write(tmp_path)
    result = run_suite(variant.module, "-k", variant.select, "--qwen3vl-grid=1,24,24", modified=modified)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{glob_literal(variant.expect)}*"])
    assert " fails " in claim_rows(result, variant.claim)


def test_golden_rows_name_every_sweep_grid(run_suite: RunSuite) -> None:
    result = run_suite("test_runtime.py", "-k", "bit_identical", "--qwen3vl-grid=1,24,24")
    result.assert_outcomes(passed=1)
    row = claim_rows(result, "runtime-equivalence")
    assert f"holds on {len(SWEEP)} grids ({', '.join(g.id for g in SWEEP)})" in row, row
