"""OpenVINO behind the runtime interface: a file loads or OpenVINO says why in one line, naming the op;
the row names the precision the CPU compiled at; only OpenVINO's own errors become refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

from pytest_qwen3vl.errors import RuntimeRefused
from pytest_qwen3vl.runtimes.openvino import OpenVINO
from tests.helpers import tiny_encoder

pytest.importorskip("openvino", reason="pip install pytest-qwen3vl[openvino]")

PIXELS = np.arange(8, dtype=np.float32).reshape(2, 4)
GRID = np.array([[1, 1, 2]], dtype=np.int64)


def test_a_file_runs_on_named_inputs_and_gives_the_outputs_asked_for(tmp_path: Path) -> None:
    """Compiling drops the Identity nodes and merges tensor names; the outputs still answer to the file's names."""
    runtime = OpenVINO("f32", threads=1)
    assert runtime.label == "openvino:f32" and runtime.arithmetic == "fp32"
    session = runtime.load(tiny_encoder(tmp_path / "f.onnx", ("pooled_embeds", "deepstack_0")))
    every = session.run({"pixel_values": PIXELS, "image_grid_thw": GRID})
    assert list(every) == ["pooled_embeds", "deepstack_0"]
    np.testing.assert_array_equal(every["pooled_embeds"], PIXELS)
    again = session.run({"pixel_values": PIXELS + 1, "image_grid_thw": GRID}, ["deepstack_0"])
    assert list(again) == ["deepstack_0"]
    np.testing.assert_array_equal(every["pooled_embeds"], PIXELS)  # handed-out values are copies


def _two_step_file(path: Path) -> Path:
    """pooled_embeds = (pixel_values * 2) + 1, the product a named intermediate value."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["pixel_values", "two"], ["doubled"], name="double"),
         helper.make_node("Add", ["doubled", "one"], ["pooled_embeds"], name="add_one")],
        "two_step", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("pooled_embeds", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.array(2, dtype=np.float32), "two"),
         numpy_helper.from_array(np.array(1, dtype=np.float32), "one")],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_intermediate_value_is_exposed_by_name_and_an_unknown_one_is_left_out(tmp_path: Path) -> None:
    """What locating a NaN/Inf runs: the file with the probes' values as extra outputs, under their names."""
    session = OpenVINO("f32", threads=1).load_exposing(_two_step_file(tmp_path / "f.onnx"), ["doubled", "absent"])
    every = session.run({"pixel_values": PIXELS})
    assert sorted(every) == ["doubled", "pooled_embeds"]
    np.testing.assert_array_equal(every["doubled"], PIXELS * 2)
    np.testing.assert_array_equal(every["pooled_embeds"], PIXELS * 2 + 1)


@pytest.mark.parametrize("hint", ["f32", "bf16", "f16", None])
def test_the_label_names_the_precision_the_cpu_compiled_at(hint: str | None) -> None:
    """A hint the CPU cannot honour compiles at another precision, and no hint at OpenVINO's default
    for the CPU (bf16 where it has AMX): the label says what the compiled model reports."""
    import openvino as ov

    runtime = OpenVINO(hint, threads=1)
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert runtime.precision == {"f32": "f32", None: default}.get(hint, runtime.precision)
    assert runtime.label == f"openvino:{runtime.precision}"
    assert runtime.arithmetic == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[runtime.precision]


def _sequence_file(path: Path) -> Path:
    """What the TorchScript exporter writes for a per-image split: SplitToSequence then SequenceAt."""
    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["pixel_values"], ["seq"], axis=0),
         helper.make_node("SequenceAt", ["seq", "position"], ["pooled_embeds"], name="the_at")],
        "sequence", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("pooled_embeds", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0], dtype=np.int64), "position")],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_file_with_an_op_it_lacks_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeRefused) as raised:
        OpenVINO("f32", threads=1).load(_sequence_file(tmp_path / "seq.onnx"))
    message = str(raised.value)
    assert message.startswith("openvino: does not load: Conversion is failed for: SequenceAt-17"), message
    assert "\n" not in message and "qwen3vl-export --recipe grid-free --exporter dynamo" in message, message
    assert raised.value.node == ("SequenceAt", "pooled_embeds")


def test_a_file_that_is_no_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(RuntimeRefused, match=r"^openvino: does not load: Unable to read the model"):
        OpenVINO("f32", threads=1).load(path)


def test_a_fault_of_ours_is_no_refusal(tmp_path: Path) -> None:
    """A feed that is no array never reaches OpenVINO: its TypeError is ours and propagates as it is."""
    session = OpenVINO("f32", threads=1).load(tiny_encoder(tmp_path / "f.onnx"))
    with pytest.raises(TypeError) as raised:
        session.run({"pixel_values": object(), "image_grid_thw": GRID})  # type: ignore[dict-item]
    assert not isinstance(raised.value, RuntimeRefused)
