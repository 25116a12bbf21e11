"""Judging a file: one shape for a finding, one place that words it, one tolerance policy, one sweep.

The sweep runs on hand-built files against a stand-in for golden, so every status is made on purpose:
served (the numbers match), wrong (it runs and answers other numbers), refused (the runtime raises).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_qwen3vl.errors import ChoiceError, Qwen3VLError, SettingsError, child_failure, choose
from pytest_qwen3vl.judge.finding import Finding, served_line
from pytest_qwen3vl.judge.sweep import sweep
from pytest_qwen3vl.judge.tolerance import TOLERANCES, OutputParity, Tolerance, measure, parse_tolerance, row_for
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.runtimes.onnxruntime import OnnxRuntimeCPU
from tests.helpers import tiny_encoder

FP32 = TOLERANCES["fp32"]
SERVED_GRID, WRONG_GRID, REFUSED_GRID = Grid.parse("1,1,2"), Grid.parse("2,1,1"), Grid.parse("1,2,2")
PIXELS = np.arange(8, dtype=np.float64).reshape(2, 4) + 1.0


def _finding(grid: Grid, *, actual: np.ndarray = PIXELS, error: str | None = None,
             problems: tuple[str, ...] = ()) -> Finding:
    outputs = () if error else (measure(actual, PIXELS, "pooled_embeds", "pooled"),)
    return Finding("f.onnx", "onnxruntime:fp32", grid, FP32, error, outputs, problems)


class StandIn:
    """Golden's answers for the sweep: the pixels themselves, except on ``WRONG_GRID`` (twice them)."""

    def inputs(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        n = grid.num_patches
        return np.arange(4 * n, dtype=np.float32).reshape(n, 4) + 1, np.array(grid.images, dtype=np.int64)

    def outputs(self, grid: Grid, count: int = 1) -> tuple[np.ndarray, ...]:
        pixels = self.inputs(grid)[0] * (2 if grid == WRONG_GRID else 1)
        return (pixels,) * count


class WithDeepStack(StandIn):
    """Golden with ``count - 1`` DeepStack features (equal to the pixels, as the stand-in file gives)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def outputs(self, grid: Grid, count: int = 1) -> tuple[np.ndarray, ...]:
        return super().outputs(grid, self.count)


# -- the finding and its words --------------------------------------------------------------------------

def test_a_finding_is_served_wrong_or_refused() -> None:
    served = _finding(SERVED_GRID)
    assert (served.status, served.served, served.reason()) == ("served", True, "")
    wrong = _finding(WRONG_GRID, actual=PIXELS * 2)
    assert (wrong.status, wrong.served) == ("wrong", False)
    assert wrong.reason() == "pooled_embeds relative L2 1"
    shape = _finding(WRONG_GRID, problems=("pooled_embeds has shape [3, 4], golden pooled [2, 4]",))
    assert (shape.status, shape.reason()) == ("wrong", "pooled_embeds has shape [3, 4], golden pooled [2, 4]")
    refused = _finding(REFUSED_GRID, error="ONNX Runtime: Reshape node r: bad shape")
    assert (refused.status, refused.served) == ("refused", False)
    assert refused.reason() == "ONNX Runtime: Reshape node r: bad shape"


def test_nan_or_inf_is_wrong_whatever_else_is_measured() -> None:
    actual = PIXELS.copy()
    actual[0, 0] = np.nan
    finding = _finding(WRONG_GRID, actual=actual)
    (output,) = finding.outputs
    assert output.nonfinite == 1 and np.isfinite([output.rel_l2, output.max_abs, output.cosine]).all()
    assert finding.status == "wrong" and finding.reason() == "pooled_embeds: 1 NaN/Inf"


def test_served_line_says_wrong_grids_then_refused_ones() -> None:
    findings = [_finding(REFUSED_GRID, error="ONNX Runtime: Reshape node r: bad shape"),
                _finding(SERVED_GRID), _finding(WRONG_GRID, actual=PIXELS * 2)]
    assert served_line(findings) == (
        False,
        "serves 1 of 3 grids; wrong on 2x1x1 (pooled_embeds relative L2 1); "
        "refuses 1x2x2 (ONNX Runtime: Reshape node r: bad shape)",
    )
    assert served_line([_finding(WRONG_GRID, actual=PIXELS * 2)]) == (
        False, "serves 0 of 1 grid; wrong on 2x1x1 (pooled_embeds relative L2 1)")


def test_a_file_that_refuses_only_calls_of_different_grids_is_told_so_apart() -> None:
    """Every one-grid call runs: the call holding two images of different grids is refused for that, in
    its own words, and a graph judged right where it runs says so. When a one-grid call is refused too,
    the mixed call is one more refusal with the runtime's reason."""
    mixed = Grid.parse("1,1,2+1,2,1")
    alike = Grid.parse("1,1,2+1,1,2")
    error = "ONNX Runtime: Add node node_add_256: Attempting to broadcast an axis by a dimension other than 1"
    findings = [_finding(SERVED_GRID), _finding(alike), _finding(mixed, error=error)]
    assert served_line(findings) == (False, "serves 2 of 3 grids; refuses 1x1x2+1x2x1 (two grids in one call)")
    assert served_line(findings, graph=True) == (
        False, "serves 2 of 3 grids; refuses 1x1x2+1x2x1 (two grids in one call); the graph is right on every grid "
        "it runs")
    three = Grid.parse("1,1,2+1,2,1+1,1,2+2,1,1")
    assert served_line([_finding(SERVED_GRID), _finding(three, error=error)])[1] == (
        "serves 1 of 2 grids; refuses 1x1x2+1x2x1+1x1x2+2x1x1 (three grids in one call)")
    also = [*findings, _finding(REFUSED_GRID, error="ONNX Runtime: Reshape node r: bad shape")]
    assert served_line(also, graph=True) == (
        False, f"serves 2 of 4 grids; refuses 1x1x2+1x2x1 ({error}), 1x2x2 (ONNX Runtime: Reshape node r: bad shape); "
        "the graph is right on every grid it runs")
    assert served_line([_finding(mixed, error=error)])[1] == f"serves 0 of 1 grid; refuses 1x1x2+1x2x1 ({error})"


def test_a_file_judged_on_no_grid_is_not_served() -> None:
    assert served_line([]) == (False, "serves 0 of 0 grids")


def test_served_line_of_every_grid_served_gives_the_worst_figure() -> None:
    close = PIXELS * (1 + 3e-7)
    served, line = served_line([_finding(SERVED_GRID), _finding(WRONG_GRID, actual=close)])
    assert served and line == "serves 2 of 2 grids (worst relative L2 3e-07)", line


def test_a_finding_reads_back_as_it_was_written() -> None:
    """What the cache keeps and another worker reads: plain JSON, the same finding back."""
    for finding in (_finding(SERVED_GRID), _finding(WRONG_GRID, actual=PIXELS * 2, problems=("extra",)),
                    _finding(REFUSED_GRID, error="ONNX Runtime: no")):
        assert Finding.from_dict(json.loads(json.dumps(finding.to_dict()))) == finding


# -- the tolerance policy -------------------------------------------------------------------------------

def test_one_table_of_tolerances_looser_as_the_arithmetic_gets_coarser() -> None:
    rows = [TOLERANCES[name] for name in ("fp32", "fp16", "quantized")]
    assert rows == sorted(rows, key=lambda t: t.rel_l2) and len({t.rel_l2 for t in rows}) == 3
    assert [t.cosine for t in rows] == sorted((t.cosine for t in rows), reverse=True)
    assert TOLERANCES["fp32"] == Tolerance(rel_l2=1e-5, max_rel=1e-4, cosine=1 - 1e-8)


def test_each_limit_decides_on_its_own() -> None:
    base = OutputParity("o", "pooled", max_abs=0.0, max_rel=0.0, rel_l2=0.0, cosine=1.0, nonfinite=0)
    assert base.within(FP32)
    for field, value in (("rel_l2", 2e-5), ("max_rel", 2e-4), ("cosine", 1 - 1e-7), ("nonfinite", 1)):
        assert not OutputParity(**{**base.__dict__, field: value}).within(FP32), field


def test_tolerance_overrides_parse_any_subset() -> None:
    assert parse_tolerance("rel_l2=1e-4, cosine = 0.99999") == {"rel_l2": 1e-4, "cosine": 0.99999}
    assert FP32.replace(parse_tolerance("max_rel=0.5")) == Tolerance(1e-5, 0.5, 1 - 1e-8)
    assert parse_tolerance("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=1", "'colour=1': unknown limit 'colour' (rel_l2, max_rel, cosine)"),
        ("rel_l2=small", "'rel_l2=small': rel_l2 is not a number"),
        ("cosine=2", "'cosine=2': cosine must be a finite number from -1 to 1"),
        ("max_rel=inf", "'max_rel=inf': max_rel must be a finite number from 0 to inf"),
        ("rel_l2=-1", "'rel_l2=-1': rel_l2 must be a finite number from 0 to inf"),
    ],
)
def test_bad_tolerances_are_settings_errors_that_leave_the_option_name_to_the_settings(
    text: str, message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_tolerance(text)
    assert str(raised.value) == message


# -- the sweep ------------------------------------------------------------------------------------------

def test_the_sweep_finds_each_grid_served_wrong_or_refused(tmp_path: Path) -> None:
    """One answer per grid, on the runtime that ran it, at the tolerance of the file's weight type."""
    path = tiny_encoder(tmp_path / "encoder.onnx", patches=2)
    findings = sweep(path, OnnxRuntimeCPU(threads=1), StandIn(), [SERVED_GRID, WRONG_GRID, REFUSED_GRID])
    assert [f.status for f in findings] == ["served", "wrong", "refused"]
    assert {(f.file, f.runtime, f.tolerance) for f in findings} == {("encoder.onnx", "onnxruntime:fp32", FP32)}
    served, line = served_line(findings)
    assert not served
    assert line.startswith("serves 1 of 3 grids; wrong on 2x1x1 (pooled_embeds relative L2 0.5); refuses 1x2x2 "
                           "(ONNX Runtime: Reshape node the_reshape: "), line
    assert findings[0].outputs[0].rel_l2 == 0.0 and not findings[2].outputs


def test_the_sweep_matches_deepstack_outputs_by_their_number(tmp_path: Path) -> None:
    """Split DeepStack outputs are compared in the order their names give, not the order the file lists them."""
    path = tiny_encoder(tmp_path / "split.onnx", ("deepstack_1", "pooled_embeds", "deepstack_0"))
    (finding,) = sweep(path, OnnxRuntimeCPU(threads=1), WithDeepStack(3), [SERVED_GRID])
    assert finding.served, finding.reason()
    assert [(o.output, o.golden) for o in finding.outputs] == [
        ("pooled_embeds", "pooled"), ("deepstack_0", "DeepStack 0"), ("deepstack_1", "DeepStack 1")]


def test_more_deepstack_outputs_than_golden_has_is_wrong(tmp_path: Path) -> None:
    path = tiny_encoder(tmp_path / "extra.onnx", ("pooled_embeds", "deepstack_0", "deepstack_1"))
    (finding,) = sweep(path, OnnxRuntimeCPU(threads=1), WithDeepStack(2), [SERVED_GRID])
    assert finding.status == "wrong" and finding.reason() == "1 more DeepStack outputs than golden's 1", finding


def test_a_file_the_runtime_cannot_load_is_refused_on_every_grid(tmp_path: Path) -> None:
    """Readable as ONNX (its interface is fine), but ONNX Runtime knows no such operator."""
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "unknown-op.onnx"
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["pixel_values"], ["pooled_embeds"], domain="no.such.domain")], "g",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("pooled_embeds", TensorProto.FLOAT, ["n", 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("no.such.domain", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save_model(model, str(path))
    findings = sweep(path, OnnxRuntimeCPU(threads=1), StandIn(), [SERVED_GRID, WRONG_GRID])
    assert [f.status for f in findings] == ["refused", "refused"]
    assert all(f.reason().startswith("ONNX Runtime: ") for f in findings), findings[0].reason()
    served, line = served_line(findings)
    assert not served and line == f"serves 0 of 2 grids; refuses every grid ({findings[0].reason()})", line


def test_tolerance_follows_the_looser_of_weight_type_and_arithmetic() -> None:
    assert [row_for("fp32", a) for a in ("fp32", "fp16", "bf16")] == ["fp32", "fp16", "bf16"]
    assert (row_for("fp16", "fp32"), row_for("quantized", "fp16")) == ("fp16", "quantized")


# -- small shared pieces --------------------------------------------------------------------------------

def test_a_choice_names_what_it_takes() -> None:
    assert choose("recipe", "report", ("report", "grid-free")) == "report"
    with pytest.raises(ChoiceError) as raised:
        choose("recipe", "fast", ("report", "grid-free"))
    assert str(raised.value) == "recipe must be one of report, grid-free, not 'fast'"
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, Qwen3VLError)


@pytest.mark.parametrize(
    ("output", "expect"),
    [
        ("Traceback (most recent call last):\n  File x\nValueError: bad shape\nwriting files... done\n",
         "ValueError: bad shape"),
        ("loading\nonnx.onnx_cpp2py_export.checker.ValidationError: no graph\n",
         "onnx.onnx_cpp2py_export.checker.ValidationError: no graph"),
        ("step 1\nstep 2 of 2\n", "step 2 of 2"),
        ("", "exit status -9"),
    ],
    ids=["error-before-progress", "dotted-class", "no-exception", "killed-silently"],
)
def test_a_child_process_failure_is_said_in_its_error_line(output: str, expect: str) -> None:
    """A failed child (the probe, genai's builder) is reported by its exception line, not by
    whatever it printed last."""
    assert child_failure(output, -9) == expect
