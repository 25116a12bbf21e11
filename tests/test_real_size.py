"""Real-size presets (released vision dimensions, random weights): run only with --qwen3vl-run-slow."""

from __future__ import annotations

import pytest

from pytest_qwen3vl.model.configs import resolve_config
from tests.conftest import REPO, RunSuite
from tests.test_claims_table import claim_line

pytestmark = pytest.mark.qwen3vl_slow

# The released configs' vision towers, as published in their config.json files.
RELEASED = {
    "2b": {"depth": 24, "hidden_size": 1024, "out_hidden_size": 2048, "deepstack_visual_indexes": [5, 11, 17]},
    "4b": {"depth": 24, "hidden_size": 1024, "out_hidden_size": 2560, "deepstack_visual_indexes": [5, 11, 17]},
    "8b": {"depth": 27, "hidden_size": 1152, "out_hidden_size": 4096, "deepstack_visual_indexes": [8, 16, 24]},
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_preset_runs_the_runtime_claim_at_released_size(run_suite: RunSuite, name: str) -> None:
    spec = resolve_config(name, REPO)
    assert {k: spec.vision[k] for k in RELEASED[name]} == RELEASED[name]
    result = run_suite("test_runtime.py", "test_contracts.py", f"--qwen3vl-config={name}", "--qwen3vl-grid=1,8,8")
    result.assert_outcomes(passed=8)
    line = claim_line(result, "runtime-equivalence")
    assert " holds " in line and f"pooled (16, {RELEASED[name]['out_hidden_size']})" in line, line


def test_2b_pooled_width_is_an_erratum_to_2560(run_suite: RunSuite) -> None:
    result = run_suite("test_export.py", "-k", "one_float32_matrix", "--qwen3vl-config=2b", "--qwen3vl-grid=1,8,8")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*export-pooled-embeds*erratum*2048*"])


def test_4b_grid_free_export_serves_the_sweep(run_suite: RunSuite) -> None:
    """One grid-free export at the 4B's dimensions, traced at 1x24x24, checked on all nine sweep grids."""
    result = run_suite("test_recipes.py", "-k", "one_grid_free_file", "--qwen3vl-config=4b")
    result.assert_outcomes(passed=1)
    assert "serves 9 of 9 grids" in claim_line(result, "grid-free-export")
