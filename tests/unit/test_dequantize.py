"""Dequantizing a file's weights as ONNX Runtime computes with them, for the formats onnxruntime's own
quantizers write, and telling the checkpoint quantized from other values."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_qwen3vl.judge.weights import OTHER, QUANTIZED, verdict
from pytest_qwen3vl.onnxfile.dequantize import read_weights

K, N, ROWS = 64, 48, 40


def _float_model(path: Path, weight: np.ndarray, table: np.ndarray) -> Path:
    """``y = x @ weight`` (MatMul's [K, N]) and ``t = table[ids]``, as an exporter writes a linear layer
    and an embedding."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "proj.weight"], ["y"]),
         helper.make_node("Gather", ["pos.weight", "ids"], ["t"])],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, K]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, N]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [5, K])],
        [numpy_helper.from_array(weight, "proj.weight"), numpy_helper.from_array(table, "pos.weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


def _nbits(source: Path, target: Path, **config: object) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    settings = {"block_size": 32, "op_types_to_quantize": ("MatMul", "Gather"),
                "quant_axes": (("MatMul", 0), ("Gather", 1)), **config}
    logging.disable(logging.WARNING)
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), algo_config=DefaultWeightOnlyQuantConfig(**settings))
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    onnx.save_model(quantizer.model.model, str(target))
    return target


def _dynamic(source: Path, target: Path, **config: object) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, **config)
    return target


def _qdq() -> object:
    from onnxruntime.quantization import QuantFormat

    return QuantFormat.QDQ


@pytest.fixture(scope="module")
def checkpoint() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(0, 0.05, (K, N)).astype(np.float32), rng.normal(0, 0.05, (ROWS, K)).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "encodings"),
    [
        (lambda s, t: _nbits(s, t, is_symmetric=True),
         {"int4 MatMulNBits (block 32)", "int4 GatherBlockQuantized (block 32)"}),
        (lambda s, t: _nbits(s, t, is_symmetric=False, accuracy_level=4),
         {"int4 MatMulNBits (block 32, accuracy level 4)", "int4 GatherBlockQuantized (block 32)"}),
        (lambda s, t: _nbits(s, t, bits=8), {"int8 MatMulNBits (block 32)"}),
        (lambda s, t: _nbits(s, t, quant_format=_qdq(), op_types_to_quantize=("MatMul",)), {"uint4 DequantizeLinear"}),
        (lambda s, t: _dynamic(s, t), {"int8 quantize_dynamic"}),
        (lambda s, t: _dynamic(s, t, per_channel=True), {"int8 quantize_dynamic"}),
    ],
    ids=["nbits-symmetric", "nbits-zero-points-level4", "nbits-8bit", "qdq-blocked", "dynamic", "dynamic-per-channel"],
)
def test_dequantized_weights_are_what_onnx_runtime_computes_with(tmp_path: Path, checkpoint, make, encodings) -> None:
    """The float model run with the dequantized weights equals the quantized model in ONNX Runtime
    (at fp32 activations), and each dequantized weight is the checkpoint's within one step."""
    import onnxruntime as ort

    weight, table = checkpoint
    path = make(_float_model(tmp_path / "float.onnx", weight, table), tmp_path / "quantized.onnx")
    found = {w.encoding: w for w in read_weights(path) if w.step is not None}
    assert encodings <= set(found), sorted(found)
    by_shape = {w.value.shape: w for w in found.values()}
    x = np.random.default_rng(1).normal(0, 1, (3, K)).astype(np.float32)
    ids = np.array([0, 3, 17, 39, 5], np.int64)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_prepacking", "1")
    y, t = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x, "ids": ids})
    matmul = by_shape[(N, K)]  # PyTorch's layout: [out, in]
    assert matmul.oriented
    if "accuracy level 4" not in matmul.encoding and "quantize_dynamic" not in matmul.encoding:  # int8 activations
        np.testing.assert_allclose(y, x @ matmul.value.T, rtol=1e-5, atol=1e-5)
    if (ROWS, K) in by_shape:
        np.testing.assert_allclose(t, by_shape[(ROWS, K)].value[ids], rtol=1e-6, atol=1e-7)
    assert verdict("proj.weight", matmul, matmul.value, weight.T.astype(np.float64)).kind == QUANTIZED
    other = np.random.default_rng(2).normal(0, 0.05, (N, K))
    assert verdict("proj.weight", matmul, matmul.value, other).kind == OTHER


def test_a_square_weight_stored_transposed_is_named_so(tmp_path: Path) -> None:
    """A MatMul takes [in, out]: PyTorch's [out, in] weight stored there as it is (the shapes agree, a
    square weight) is the checkpoint's transposed; stored transposed, it is the checkpoint's."""
    weight = np.random.default_rng(0).normal(0, 1, (K, K)).astype(np.float32)  # PyTorch's [out, in]
    for stored, kind, detail in ((weight.T.copy(), "equal", ""), (weight, OTHER, "the checkpoint's transposed")):
        path = _float_model(tmp_path / "f.onnx", stored, np.zeros((ROWS, K), np.float32))
        (read,) = [w for w in read_weights(path) if w.name == "proj.weight"]
        assert read.oriented
        found = verdict("proj.weight", read, read.value, weight.astype(np.float64))
        assert (found.kind, found.detail) == (kind, detail), found


def test_accuracy_level_4_is_computed_as_a_downstream_session_computes_it(tmp_path: Path, checkpoint) -> None:
    """ONNX Runtime's MatMulNBits computes with int8 activations at accuracy level 4 only on prepacked
    weights: under ``LOW_MEMORY`` alone it computes as at level 0, so a file holding it is loaded
    without that setting, as a downstream session loads it."""
    from pytest_qwen3vl.onnxfile.dequantize import fp32_activations_copy
    from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, OnnxRuntimeCPU

    weight, table = checkpoint
    level4 = _nbits(_float_model(tmp_path / "float.onnx", weight, table), tmp_path / "level4.onnx",
                    is_symmetric=True, accuracy_level=4, op_types_to_quantize=("MatMul",))
    (tmp_path / "copy").mkdir()
    level0 = fp32_activations_copy(level4, tmp_path / "copy")
    ops = {node.op_type for node in onnx.load(str(level4)).graph.node}
    feeds = {"x": np.random.default_rng(1).normal(0, 1, (3, K)).astype(np.float32),
             "ids": np.array([0, 3, 17, 39, 5], np.int64)}
    runtime = OnnxRuntimeCPU(config=LOW_MEMORY, threads=1)
    exact = runtime.load(level0).run(feeds)["y"]
    unpacked = runtime.load(level4).run(feeds)["y"]
    downstream = runtime.for_ops(ops).load(level4).run(feeds)["y"]
    np.testing.assert_allclose(unpacked, exact, rtol=1e-6, atol=1e-6)  # what the check saw before
    cost = float(np.linalg.norm(downstream - exact) / np.linalg.norm(exact))
    assert cost > 1e-4, cost
    assert runtime.for_ops({"MatMul", "Gather"}) is runtime


def test_initializers_are_read_one_at_a_time_as_onnx_reads_them(tmp_path: Path, checkpoint) -> None:
    """The graph without its weights' data, and each initializer read on its own, inline or external,
    equal what onnx reads from the whole file; bytes that are no ONNX model are refused."""
    from pytest_qwen3vl.onnxfile.initializers import Initializers

    inline = _float_model(tmp_path / "inline.onnx", *checkpoint)
    external = tmp_path / "external.onnx"
    onnx.save_model(onnx.load(str(inline)), str(external), save_as_external_data=True, location="external.data",
                    size_threshold=0)
    for path in (inline, external):
        reader = Initializers(path)
        whole = onnx.load(str(path))
        assert reader.model.graph.node == whole.graph.node
        assert [(i.name, i.data_type, list(i.dims)) for i in reader.model.graph.initializer] == \
            [(i.name, i.data_type, list(i.dims)) for i in whole.graph.initializer]
        assert not any(i.raw_data for i in reader.model.graph.initializer)
        assert [list(i.external_data) for i in reader.model.graph.initializer] == \
            [list(i.external_data) for i in onnx.load(str(path), load_external_data=False).graph.initializer]
        for init in whole.graph.initializer:
            np.testing.assert_array_equal(reader.array(init.name), numpy_helper.to_array(init))
    (tmp_path / "cut.onnx").write_bytes(inline.read_bytes()[:-100])
    (tmp_path / "text.onnx").write_bytes(b"\xff\xff\xff\xff\xff\xff\xff")
    for bad in ("cut.onnx", "text.onnx"):
        with pytest.raises(ValueError):
            Initializers(tmp_path / bad)


def _worst_for_bf16(rng: np.random.Generator) -> np.ndarray:
    """Values just short of halfway between two bfloat16 numbers: rounding moves each by almost 2^-8."""
    return (2.0 ** rng.integers(-8, 0, (64, 48)) * (1 + 0.999 * 2**-8) * rng.choice([-1, 1], (64, 48)))


@pytest.mark.parametrize(
    "make",
    [lambda rng: rng.normal(0, 0.05, (64, 48)), lambda rng: rng.normal(0, 1e-6, (64, 48)), _worst_for_bf16],
    ids=["weights", "fp16-subnormals", "bf16-worst-rounding"],
)
def test_rounded_tensors_are_told_from_other_values_at_any_scale(make) -> None:
    """The checkpoint rounded to bfloat16 or float16 is named so: at a weight's scale, where float16
    keeps only a few bits (its subnormals), and where rounding moves every value the most; the same
    tensor with that error doubled, or another seed's values, is other. (Tensors far from the
    checkpoint skip the rounding passes: the bound that allows it must never skip a rounded one.)"""
    import torch

    from pytest_qwen3vl.judge.weights import BF16, FP16
    from pytest_qwen3vl.onnxfile.dequantize import FileWeight

    rng = np.random.default_rng(1)
    ref = make(rng).astype(np.float32)
    bf16 = torch.from_numpy(ref).to(torch.bfloat16).float().numpy()
    fp16 = ref.astype(np.float16).astype(np.float32)
    other = make(rng).astype(np.float32)
    for value, kind in ((bf16, BF16), (fp16, FP16), (bf16 + (bf16 - ref), OTHER), (other, OTHER)):
        found = verdict("w", FileWeight("w", value, "float32"), value, ref.astype(np.float64))
        assert found.kind == kind, (kind, found)
