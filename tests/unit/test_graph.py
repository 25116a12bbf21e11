"""Graph signatures, digests and ONNX Runtime helpers, on small hand-built ONNX graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_qwen3vl.metrics import parity
from pytest_qwen3vl.onnxfile.signature import CONSTANTS_BUCKET, graph_digest, graph_signature, group_initializers
from pytest_qwen3vl.runtimes.onnxruntime import default_threads, ort_session, run_outputs, run_pooled


def _vision_like(path: Path, *, bias: float = 0.5, doc: str = "") -> Path:
    """pooled_embeds = pixel_values @ W + b, with the grid passed through as the first output."""
    weight = numpy_helper.from_array(np.eye(4, 2, dtype=np.float32), "model.merger.linear_fc1.weight")
    bias_t = numpy_helper.from_array(np.full(2, bias, dtype=np.float32), "model.merger.linear_fc1.bias")
    folded = numpy_helper.from_array(np.ones(1, dtype=np.float32), "onnx::Mul_7")
    nodes = [
        helper.make_node("Identity", ["image_grid_thw"], ["grid_echo"], doc_string=doc),
        helper.make_node("MatMul", ["pixel_values", "model.merger.linear_fc1.weight"], ["mm"], doc_string=doc),
        helper.make_node("Add", ["mm", "model.merger.linear_fc1.bias"], ["biased"]),
        helper.make_node("Mul", ["biased", "onnx::Mul_7"], ["pooled_embeds"]),
    ]
    if doc:
        entry = nodes[1].metadata_props.add()
        entry.key, entry.value = "source", doc
    graph = helper.make_graph(
        nodes,
        "vision",
        [
            helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["num_patches", 4]),
            helper.make_tensor_value_info("image_grid_thw", TensorProto.INT64, ["num_images", 3]),
        ],
        [
            helper.make_tensor_value_info("grid_echo", TensorProto.INT64, ["num_images", 3]),
            helper.make_tensor_value_info("pooled_embeds", TensorProto.FLOAT, ["num_merged_patches", None]),
        ],
        initializer=[weight, bias_t, folded],
        doc_string=doc,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=doc or "test")
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _vision_like(tmp_path / "vision.onnx")


def test_contract_names_types_dims_and_opset(model_path: Path) -> None:
    contract = graph_signature(model_path)["contract"]
    assert contract == {
        "opset": 17,
        "inputs": [
            {"name": "pixel_values", "elem_type": "float32", "dims": ["num_patches", 4]},
            {"name": "image_grid_thw", "elem_type": "int64", "dims": ["num_images", 3]},
        ],
        "outputs": [
            {"name": "grid_echo", "elem_type": "int64", "dims": ["num_images", 3]},
            {"name": "pooled_embeds", "elem_type": "float32", "dims": ["num_merged_patches", None]},
        ],
    }


def test_initializers_grouped_by_module_and_operators_counted(model_path: Path) -> None:
    signature = graph_signature(model_path)
    assert signature["initializers"] == {"model.merger.linear_fc1": ["bias", "weight"], CONSTANTS_BUCKET: 1}
    assert signature["operators"] == {"Add": 1, "Identity": 1, "MatMul": 1, "Mul": 1}
    assert json.loads(json.dumps(signature)) == signature


def test_exporter_made_names_go_to_the_constants_bucket() -> None:
    names = ["model.blocks.0.attn.qkv.weight", "onnx::MatMul_12", "/model/Constant_output_0", "1234", "scale"]
    assert group_initializers(names) == {"model.blocks.0.attn.qkv": ["weight"], CONSTANTS_BUCKET: 4}


def test_operators_in_subgraphs_and_custom_domains_count(tmp_path: Path) -> None:
    value = helper.make_tensor_value_info
    relu = helper.make_node("Relu", ["x"], ["y"])
    branch = helper.make_graph([relu], "branch", [], [value("y", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
            helper.make_node("FusedGelu", ["y"], ["z"], domain="com.microsoft"),
        ],
        "g",
        [value("cond", TensorProto.BOOL, []), value("x", TensorProto.FLOAT, [1])],
        [value("z", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "sub.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    assert graph_signature(path)["operators"] == {"If": 1, "Relu": 2, "com.microsoft::FusedGelu": 1}


def test_digest_ignores_doc_strings_and_metadata_but_not_weights(tmp_path: Path) -> None:
    plain = graph_digest(_vision_like(tmp_path / "a.onnx"))
    documented = graph_digest(_vision_like(tmp_path / "b.onnx", doc="/somewhere/modeling_modified.py:745"))
    other_weight = graph_digest(_vision_like(tmp_path / "c.onnx", bias=0.25))
    assert plain == documented
    assert plain != other_weight
    assert len(plain) == 64


def test_run_pooled_picks_pooled_embeds_by_name(model_path: Path) -> None:
    session = ort_session(model_path, threads=1)
    pixels = np.arange(8, dtype=np.float32).reshape(2, 4)
    grid = np.array([[1, 2, 2]], dtype=np.int64)
    expected = pixels @ np.eye(4, 2, dtype=np.float32) + 0.5
    np.testing.assert_array_equal(run_pooled(session, pixels, grid), expected)
    outputs = run_outputs(session, pixels, grid)
    assert list(outputs) == ["grid_echo", "pooled_embeds"]
    np.testing.assert_array_equal(outputs["grid_echo"], grid)


def test_parity_measures_errors_and_refuses_other_shapes() -> None:
    expected = np.array([[1.0, -2.0], [4.0, 0.0]], dtype=np.float32)
    actual = expected + np.array([[0.0, 0.0], [0.0, 0.004]], dtype=np.float32)
    result = parity(actual, expected)
    assert result.max_abs == pytest.approx(0.004)
    assert result.max_rel == pytest.approx(0.001)
    assert result.rel_l2 == pytest.approx(0.004 / np.sqrt(21))
    assert parity(expected, expected).max_abs == 0.0
    with pytest.raises(ValueError, match=r"shapes differ: actual \(1, 2\), expected \(2, 2\)"):
        parity(expected[:1], expected)


def test_sessions_share_the_cores_among_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    alone = default_threads()
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(alone * 4))
    assert alone >= 1
    assert default_threads() == 1
