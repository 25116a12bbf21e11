"""The eager claims run on the sweep's grids whatever ``--qwen3vl-grid`` says, and name the grids.

A fork that swaps H and W in the position-embedding interpolation computes golden's numbers on every
square grid: judged on the default 1x24x24 alone, runtime-equivalence would say holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qwen3vl.model.build import VisionPair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.eager import EagerRuns
from pytest_qwen3vl.model.grids import SWEEP, Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.model.outputs import deepstack
from pytest_qwen3vl.source.files import installed_golden_path
from tests.conftest import RunSuite
from tests.helpers import claim_row, glob_literal
from tests.model_variants import POS_EMBED_H_W_SWAPPED


def test_square_grid_run_still_catches_a_h_w_swap(run_suite: RunSuite, tmp_path: Path) -> None:
    variant = POS_EMBED_H_W_SWAPPED
    modified = variant.write(tmp_path)
    result = run_suite(variant.module, "-k", variant.select, "--qwen3vl-grid=1,24,24", modified=modified)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{glob_literal(variant.expect)}*"])
    assert " fails " in claim_row(result, variant.claim)


def test_golden_rows_name_every_sweep_grid(run_suite: RunSuite) -> None:
    result = run_suite("test_runtime.py", "-k", "bit_identical", "--qwen3vl-grid=1,24,24")
    result.assert_outcomes(passed=1)
    row = claim_row(result, "runtime-equivalence")
    assert f"holds on {len(SWEEP)} grids ({', '.join(g.id for g in SWEEP)})" in row, row


def test_each_model_runs_once_per_grid_for_every_claim_that_reads_it(pair: VisionPair) -> None:
    spec = resolve_config("tiny", installed_golden_path().parent)
    runs = EagerRuns({"golden": pair.golden, "modified": pair.modified}, [make_inputs(g, spec, 0) for g in SWEEP[:2]])
    forwards: list[str] = []
    handle = pair.modified.register_forward_hook(lambda *_: forwards.append("modified"))
    try:
        pair.modified._skip_deepstack_export = True  # a flag left set elsewhere: the run is made without it
        first = runs("modified", SWEEP[0])
        assert runs("modified", SWEEP[0]) is first and forwards == ["modified"]
        assert pair.modified._skip_deepstack_export is True  # and it is put back
    finally:
        handle.remove()
        del pair.modified._skip_deepstack_export
    assert [call.name for call in first.calls] == ["blocks.0.attn"]
    assert len(deepstack(first.outputs)) == len(spec.vision["deepstack_visual_indexes"])  # flag unset: all ran
    with pytest.raises(ValueError, match="1x8x8 is not an eager grid"):
        runs("golden", Grid.parse("1,8,8"))
