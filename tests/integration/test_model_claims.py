"""The model claims' tests catch wrong files: each variant fails its claim's test, and only for modified.

One in-process run per variant, of just that claim's test on a small grid. The report calls this math
shared, so golden's parametrization must keep passing while modified's fails and the claims table
marks the claim ``fails``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
from tests.conftest import RunSuite
from tests.helpers import claim_row, glob_literal
from tests.model_variants import VARIANTS, ModelVariant

GRID = "--qwen3vl-grid=1,8,8"


@pytest.fixture(scope="module", autouse=True)
def imported_once() -> None:
    """Import torch, transformers and the golden file here: an in-process run drops the modules it imported."""
    import_modeling_file(installed_golden_path(), "golden")


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_wrong_file_fails_its_claim(run_suite: RunSuite, tmp_path: Path, variant: ModelVariant) -> None:
    modified = variant.write(tmp_path)
    result = run_suite(variant.module, "-k", variant.select, GRID, modified=modified)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED *::*[[]*modified[]] - *"])
    result.stdout.fnmatch_lines([f"*{glob_literal(variant.expect)}*"])
    row = claim_row(result, variant.claim)
    assert " fails " in row, row


def test_preprocessing_claims_show_the_measured_grids(run_suite: RunSuite) -> None:
    result = run_suite("test_preprocessing.py")
    result.assert_outcomes(passed=2)
    grid_row = claim_row(result, "grid-from-size")
    assert " erratum " in grid_row, grid_row
    assert "400x400 -> (1, 24, 24)" in grid_row and "report says: 400x400 -> (1, 25, 25)" in grid_row, grid_row
    assert " holds " in claim_row(result, "pipeline-384")
