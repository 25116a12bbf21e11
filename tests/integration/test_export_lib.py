"""export_vision, its wrappers and the tracing helpers, on the tiny config at a 1x4x4 grid."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pytest_qwen3vl.errors import ExporterUnavailable, ExportFailed, ModelRaised
from pytest_qwen3vl.export.builder import (
    ExportResult,
    _publish,
    export_mode,
    export_vision,
    failure_summary,
    make_wrapper,
    output_names,
)
from pytest_qwen3vl.export.tracing import count_deepstack_calls, enclosing_function, trace_hazards
from pytest_qwen3vl.metrics import parity
from pytest_qwen3vl.model.build import VisionPair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import VisionInputs, make_inputs
from pytest_qwen3vl.onnxfile.signature import graph_digest, graph_signature
from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_pooled
from tests.helpers import session_exports

GRID = Grid.parse("1,4,4")


@pytest.fixture(scope="module")
def inputs(pair: VisionPair) -> VisionInputs:
    return make_inputs(GRID, resolve_config("tiny", Path()), seed=1)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def modified_pooled(pair: VisionPair, inputs: VisionInputs, onnx_dir: Path) -> ExportResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's own warnings must stay inside export_vision
        return export_vision(pair.modified, *inputs.args, onnx_dir / "modified-pooled.onnx")


@pytest.fixture(scope="module")
def golden_pooled(pair: VisionPair, inputs: VisionInputs, onnx_dir: Path) -> ExportResult:
    return export_vision(pair.golden, *inputs.args, onnx_dir / "golden-pooled.onnx")


def assert_untouched(model: torch.nn.Module, flag: object = "absent") -> None:
    assert model.config._attn_implementation == "sdpa"
    assert all(block.attn.config._attn_implementation == "sdpa" for block in model.blocks)
    assert model.__dict__.get("_skip_deepstack_export", "absent") == flag
    assert not model.training


def test_pooled_export_has_one_output_with_symbolic_first_axes(modified_pooled: ExportResult) -> None:
    contract = graph_signature(modified_pooled.path)["contract"]
    assert contract == {
        "opset": 17,
        "inputs": [
            {"name": "pixel_values", "elem_type": "float32", "dims": ["num_patches", 1536]},
            {"name": "image_grid_thw", "elem_type": "int64", "dims": ["num_images", 3]},
        ],
        "outputs": [{"name": "pooled_embeds", "elem_type": "float32", "dims": ["num_merged_patches", 2560]}],
    }
    initializers = graph_signature(modified_pooled.path)["initializers"]
    assert not [group for group in initializers if ".deepstack_merger_list." in group]
    assert "model.merger.linear_fc1" in initializers


def test_result_captures_the_torchscript_deprecation_and_counts_tracer_warnings(modified_pooled: ExportResult) -> None:
    assert modified_pooled.requested_outputs == ("pooled_embeds",)
    captured = modified_pooled.warnings
    assert any(w.startswith("DeprecationWarning: You are using the legacy TorchScript") for w in captured)
    assert not any(w.startswith("TracerWarning") for w in captured)
    assert modified_pooled.tracer_warnings > 0
    assert modified_pooled.seconds > 0
    assert [p.name for p in modified_pooled.path.parent.iterdir() if p.name.startswith(".")] == []


def test_export_leaves_the_model_as_it_found_it(pair: VisionPair, modified_pooled: ExportResult) -> None:
    assert_untouched(pair.modified)


def test_ort_computes_what_torch_computes_at_the_export_grid(
    pair: VisionPair, inputs: VisionInputs, modified_pooled: ExportResult
) -> None:
    with torch.no_grad():
        expected = pair.modified(*inputs.args)[0]
    result = parity(run_pooled(ort_session(modified_pooled.path), *inputs.args), expected)
    assert result.max_abs < 1e-5
    assert result.rel_l2 < 1e-5


def test_golden_and_modified_pooled_exports_are_the_same_graph(
    golden_pooled: ExportResult, modified_pooled: ExportResult
) -> None:
    assert graph_signature(golden_pooled.path) == graph_signature(modified_pooled.path)
    assert graph_digest(golden_pooled.path) == graph_digest(modified_pooled.path)


def test_golden_all_outputs_are_pooled_then_each_deepstack_tensor(
    pair: VisionPair, inputs: VisionInputs, onnx_dir: Path
) -> None:
    result = export_vision(pair.golden, *inputs.args, onnx_dir / "golden-all.onnx", wrapper="all")
    signature = graph_signature(result.path)
    names = [output["name"] for output in signature["contract"]["outputs"]]
    assert names == ["pooled_embeds", "deepstack_0", "deepstack_1", "deepstack_2"]
    assert all(output["dims"] == ["num_merged_patches", 2560] for output in signature["contract"]["outputs"])
    assert any(group.startswith("model.deepstack_merger_list.") for group in signature["initializers"])
    assert_untouched(pair.golden)


def test_all_outputs_name_only_what_tracing_emits(pair: VisionPair, inputs: VisionInputs) -> None:
    with export_mode(pair.modified, skip_deepstack=None):
        names = output_names(pair.modified, *inputs.args, "all")
    assert names == ["pooled_embeds"]  # its is_tracing() clause skips DeepStack while tracing


def test_whole_tuple_of_modified_fails_in_one_line_and_restores_the_model(
    pair: VisionPair, inputs: VisionInputs, onnx_dir: Path
) -> None:
    pair.modified._skip_deepstack_export = False
    try:
        with pytest.raises(ExportFailed) as info:
            export_vision(pair.modified, *inputs.args, onnx_dir / "modified-tuple.onnx", wrapper="tuple")
        assert_untouched(pair.modified, flag=False)
    finally:
        del pair.modified._skip_deepstack_export
    assert info.value.summary.startswith("RuntimeError: ArrayRef: invalid index")
    assert "\n" not in info.value.summary
    assert not (onnx_dir / "modified-tuple.onnx").exists()
    assert sorted(p.name for p in onnx_dir.iterdir() if p.name.startswith(".")) == []


def test_a_forward_error_is_an_export_failure_naming_the_model_function(pair: VisionPair, onnx_dir: Path) -> None:
    pixels = torch.zeros(16, 1536)
    wrong_grid = torch.tensor([[1, 4, 8]])
    with pytest.raises(ExportFailed) as info:
        export_vision(pair.golden, pixels, wrong_grid, onnx_dir / "broken.onnx")
    assert "\n" not in info.value.summary
    assert " at forward (modeling_qwen3_vl.py:" in info.value.summary
    assert_untouched(pair.golden)


def test_dynamo_failure_is_one_line(pair: VisionPair, inputs: VisionInputs, onnx_dir: Path) -> None:
    with pytest.raises(ExportFailed) as info:
        export_vision(pair.modified, *inputs.args, onnx_dir / "dynamo.onnx", exporter="dynamo")
    summary = info.value.summary
    assert "\n" not in summary and len(summary) < 400
    if not isinstance(info.value, ExporterUnavailable):
        assert summary.startswith("GuardOnDataDependentSymNode: ")
        assert " at fast_pos_embed_interpolate (" in summary
    assert_untouched(pair.modified)


def test_unknown_wrapper_or_exporter_is_refused(pair: VisionPair, inputs: VisionInputs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wrapper must be one of pooled, first, all, stacked, tuple"):
        make_wrapper(pair.golden, "last")
    with pytest.raises(ValueError, match="exporter must be one of torchscript, dynamo"):
        export_vision(pair.golden, *inputs.args, tmp_path / "x.onnx", exporter="tflite")


def test_failure_summary_takes_the_root_cause_and_its_call_site() -> None:
    try:
        try:
            message = '\x1b[96mCould not   guard\x1b[0m on u0\n\nThe call:\n  File "/m/model.py", line 649, in interp\n'
            raise ValueError(message)
        except ValueError as inner:
            raise RuntimeError("Failed to export.\nlong story") from inner
    except RuntimeError as outer:
        assert failure_summary(outer) == "ValueError: Could not guard on u0 at interp (model.py:649)"
    assert failure_summary(KeyError()) == "KeyError"


def test_external_data_is_gathered_into_one_file_published_with_the_model(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    weights = [numpy_helper.from_array(np.full((512,), i, dtype=np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("Sum", ["w0", "w1", "w2"], ["y"])]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [512])
    model = helper.make_model(helper.make_graph(nodes, "g", [], [output], initializer=weights))
    onnx.save_model(model, str(staging / "vision.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(staging.iterdir())) == 4

    target = tmp_path / "out" / "vision.onnx"
    target.parent.mkdir()
    _publish(staging, target, "torchscript")
    assert sorted(p.name for p in target.parent.iterdir()) == ["vision.onnx", "vision.onnx.data"]
    session = ort_session(target, threads=1)
    np.testing.assert_array_equal(session.run(None, {})[0], np.full((512,), 3, dtype=np.float32))


def test_trace_hazards_place_the_grid_constants_and_the_change_adds_none(
    pair: VisionPair, inputs: VisionInputs
) -> None:
    golden = trace_hazards(pair.golden, *inputs.args)
    modified = trace_hazards(pair.modified, *inputs.args)
    assert golden == sorted(golden)
    assert {h.key for h in golden} == {h.key for h in modified}
    functions = {h.function for h in golden}
    assert {"Qwen3VLVisionModel.rot_pos_emb", "Qwen3VLVisionModel.fast_pos_embed_interpolate"} <= functions
    assert len({(h.path, h.line, h.message) for h in golden}) == len(golden)
    for hazard in golden:
        assert hazard.file == "modeling_qwen3_vl.py"
        assert hazard.count >= 1 and "\n" not in hazard.message
        assert enclosing_function(hazard.path, hazard.line) == hazard.function
    assert_untouched(pair.golden)


def test_enclosing_function_names_methods_and_inner_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("x = 1\nclass A:\n    def f(self):\n        def g():\n            return 1\n        return g\n")
    assert [enclosing_function(str(source), line) for line in (1, 3, 5, 6)] == [
        "<module>", "A.f", "A.f.<locals>.g", "A.f",
    ]


@pytest.mark.parametrize(
    ("role", "trace", "flag", "expected"),
    [
        ("golden", False, None, [1, 1, 1]),
        ("golden", True, True, [1, 1, 1]),
        ("modified", False, None, [1, 1, 1]),
        ("modified", False, True, [0, 0, 0]),
        ("modified", True, None, [0, 0, 0]),
        ("modified", True, True, [0, 0, 0]),
    ],
)
def test_deepstack_calls_counted_per_merger(
    pair: VisionPair, inputs: VisionInputs, role: str, trace: bool, flag: bool | None, expected: list[int]
) -> None:
    model = getattr(pair, role)
    assert count_deepstack_calls(model, *inputs.args, trace=trace, flag=flag) == expected
    assert_untouched(model)
    assert all(not merger._forward_hooks for merger in model.deepstack_merger_list)


def test_counts_and_hazards_are_measured_once_then_read_from_the_cache(pair: VisionPair, tmp_path: Path) -> None:
    """What another worker, or the next run, gets: the same lists, without tracing the model again."""
    first, later = session_exports(pair, tmp_path), session_exports(pair, tmp_path)
    args = make_inputs(GRID, resolve_config("tiny", Path()), 0).args
    counts = first.deepstack_calls("modified", GRID, trace=True, flag=None)
    hazards = first.trace_hazards("modified", GRID)
    assert counts == count_deepstack_calls(pair.modified, *args, trace=True, flag=None) == [0, 0, 0]
    assert hazards == trace_hazards(pair.modified, *args) and hazards
    assert later.deepstack_calls("modified", GRID, trace=True, flag=None) == counts
    assert later.trace_hazards("modified", GRID) == hazards
    assert later.measured.events == {"reused": 2}
    assert first.deepstack_calls("modified", GRID, trace=True, flag=True) == [0, 0, 0]  # another case, measured
    assert first.measured.events == {"built": 3}


def test_a_model_that_raises_while_counted_is_measured_again(
    pair: VisionPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its exception is the verdict (ModelRaised carries it), and a verdict against the file is never kept."""
    exports = session_exports(pair, tmp_path)

    def broken(*_: object) -> None:
        raise RuntimeError("merger exploded")

    monkeypatch.setattr(pair.modified.merger, "forward", broken)
    for _ in range(2):
        with pytest.raises(ModelRaised) as raised:
            exports.deepstack_calls("modified", GRID, trace=False, flag=None)
        assert isinstance(raised.value.error, RuntimeError) and "merger exploded" in str(raised.value.error)
    assert exports.measured.events == {"unpublished": 2}
