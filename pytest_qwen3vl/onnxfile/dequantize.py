"""A file's weights as the values its graph computes with: fp16 and bf16 widened, quantized formats
dequantized, each in the layout of the PyTorch parameter it stands for where the consumer says it.

Formats read: float initializers (fp32, fp16, bf16), ``DequantizeLinear`` of an initializer (per
tensor, per axis, blocked), onnxruntime's ``quantize_dynamic`` (``<name>_quantized`` with
``_scale`` and ``_zero_point``), ``MatMulNBits`` (any bits, block size, packed or float zero
points) and ``GatherBlockQuantized``. A quantized tensor carries its quantization step per element,
so the judge can tell the checkpoint quantized from other values. onnx and numpy are imported inside
the functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

# Ops a weight passes through unchanged on its way to the op that decides its layout.
_PASS = ("Identity", "Cast", "DequantizeLinear")
_ENCODINGS = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64"}  # TensorProto element types
# Ops whose quantized activations make a file's arithmetic int8 (no fp32 form of the same file).
INT8_ACTIVATIONS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul",
                              "MatMulIntegerToFloat"})


@dataclass
class FileWeight:
    """One weight as the graph uses it: ``value`` in float32, ``step`` the quantization step of each
    element (None unless quantized), ``oriented`` when the consumer fixed its layout as PyTorch's."""

    name: str
    value: np.ndarray
    encoding: str  # "float32", "float16", "bfloat16", "int4 MatMulNBits (block 32)", ...
    step: np.ndarray | None = None
    oriented: bool = False


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit values packed in bytes, lowest bits first, along the last axis."""
    import numpy as np

    data: np.ndarray = packed.astype(np.uint8)
    if bits == 8:
        return data
    per = 8 // bits
    parts = [(data >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    unpacked: np.ndarray = np.stack(parts, axis=-1).reshape(*data.shape[:-1], data.shape[-1] * per)
    return unpacked


def _blocked(values: np.ndarray, axis: int, block: int, size: int) -> np.ndarray:
    """Per-block ``values`` repeated along ``axis`` to ``size`` elements."""
    import numpy as np

    repeated: np.ndarray = np.repeat(values, block, axis=axis).take(range(size), axis=axis)
    return repeated


def _matmul_nbits(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray]) -> FileWeight:
    """``MatMulNBits``' B as PyTorch's [N, K] weight: ``(q - zero_point) * scale`` per block."""
    import numpy as np

    a = _attrs(node)
    n, k, bits, block = int(a["N"]), int(a["K"]), int(a["bits"]), int(a["block_size"])
    blocks = math.ceil(k / block)
    q = _unpack(arrays[node.input[1]].reshape(n, blocks, -1), bits).reshape(n, -1)[:, : blocks * block]
    scale: np.ndarray = arrays[node.input[2]].astype(np.float64).reshape(n, blocks)
    zero: Any = float(1 << (bits - 1))
    if len(node.input) > 3 and node.input[3]:
        stored = arrays[node.input[3]]
        zero = (stored.astype(np.float64).reshape(n, blocks) if stored.dtype.kind == "f"
                else _unpack(stored.reshape(n, -1), bits)[:, :blocks].astype(np.float64))
    zero_full = _blocked(np.broadcast_to(zero, (n, blocks)), 1, block, blocks * block)
    step = _blocked(scale, 1, block, blocks * block)
    value = ((q - zero_full) * step)[:, :k]
    level = a.get("accuracy_level", 0)
    return FileWeight(node.input[1], value.astype(np.float32), f"int{bits} MatMulNBits (block {block}"
                      + (f", accuracy level {level})" if level else ")"), np.abs(step[:, :k]), oriented=True)


def _gather_block(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray], dtype: int) -> FileWeight:
    """``GatherBlockQuantized``'s table: blocks of ``block_size`` along ``quantize_axis``."""
    import numpy as np
    import onnx

    a = _attrs(node)
    block, axis, bits = int(a.get("block_size", 128)), int(a.get("quantize_axis", 1)), int(a.get("bits", 4))
    data = arrays[node.input[0]]
    if dtype == onnx.TensorProto.UINT8 and bits < 8:
        data = _unpack(data, bits)
    q: np.ndarray = data.astype(np.float64)
    axis %= q.ndim
    size = q.shape[axis]
    scale: np.ndarray = _blocked(arrays[node.input[2]].astype(np.float64), axis, block, size)
    signed = dtype in (onnx.TensorProto.INT4, onnx.TensorProto.INT8)
    zero: Any = 0.0 if signed else float(1 << (bits - 1))
    if len(node.input) > 3 and node.input[3]:
        stored = arrays[node.input[3]]
        if stored.dtype.kind != "f" and dtype == onnx.TensorProto.UINT8 and bits < 8:
            stored = _unpack(stored, bits)
        zero = _blocked(stored.astype(np.float64), axis, block, size)
    value = (q - zero) * scale
    return FileWeight(node.input[0], value.astype(np.float32), f"int{bits} GatherBlockQuantized (block {block})",
                      np.abs(scale), oriented=True)


def _dequantize_linear(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray], dtype: str) -> FileWeight:
    """``DequantizeLinear`` of an initializer: per tensor, per ``axis``, or in blocks of ``block_size``."""
    import numpy as np

    a = _attrs(node)
    q: np.ndarray = arrays[node.input[0]].astype(np.float64)
    scale: np.ndarray = arrays[node.input[1]].astype(np.float64)
    zero = arrays[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale.size > 1:
        axis = int(a.get("axis", 1)) % q.ndim
        block = int(a.get("block_size", 0))
        if block:
            scale, zero = (_blocked(v, axis, block, q.shape[axis]) if v.size > 1 else v for v in (scale, zero))
        else:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    value = (q - zero) * scale
    return FileWeight(node.input[0], value.astype(np.float32), f"{dtype} DequantizeLinear",
                      np.abs(np.broadcast_to(scale, q.shape)))


def _orientation(consumers: Mapping[str, list[tuple[onnx.NodeProto, int]]], name: str) -> bool | None:
    """Whether the tensor ``name`` is stored as its PyTorch parameter (True), transposed (False), or
    neither is said by its consumer (None): a MatMul takes [in, out], a Gemm with transB [out, in]."""
    flipped, current = False, name
    for _ in range(8):
        uses = consumers.get(current, [])
        if not uses:
            return None
        node, index = uses[0]
        if node.op_type in _PASS and index == 0:
            current = node.output[0]
        elif node.op_type == "Transpose" and list(_attrs(node).get("perm", [1, 0])) == [1, 0]:
            flipped, current = not flipped, node.output[0]
        elif node.op_type in ("MatMul", "MatMulInteger") and index == 1:
            return flipped
        elif node.op_type == "Gemm" and index == 1:
            return bool(_attrs(node).get("transB", 0)) != flipped
        else:
            return None
    return None


def read_weights(path: Path) -> list[FileWeight]:
    """Every float or quantized weight of the file (external data included), as the graph uses it."""
    import numpy as np
    import onnx

    from pytest_qwen3vl.onnxfile.initializers import Initializers
    from pytest_qwen3vl.onnxfile.structure import consumed

    reader = Initializers(path)  # one tensor at a time: the arrays are the one copy of the weights held
    model = reader.model
    read = set().union(*(consumed(node) for node in model.graph.node))
    # an initializer no node reads is not a weight of the graph (a rewrite may leave the original)
    types = {i.name: i.data_type for i in model.graph.initializer if i.name in read}
    arrays = {name: reader.array(name) for name in types}
    used: set[str] = set()
    found: list[FileWeight] = []
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and node.input[1] in arrays and node.input[1] not in used:
            found.append(_matmul_nbits(node, arrays))
        elif node.op_type == "GatherBlockQuantized" and node.input[0] in arrays and node.input[0] not in used:
            found.append(_gather_block(node, arrays, types[node.input[0]]))
        elif node.op_type == "DequantizeLinear" and node.input[0] in arrays and node.input[0] not in used:
            dtype = onnx.TensorProto.DataType.Name(types[node.input[0]]).lower()
            found.append(_dequantize_linear(node, arrays, dtype))
        else:
            continue
        used.update(v for v in node.input if v in arrays)
    for name in list(arrays):
        base = name.removesuffix("_quantized")
        if base != name and f"{base}_scale" in arrays and name not in used:
            q: np.ndarray = arrays[name].astype(np.float64)
            zero: np.ndarray = arrays.get(f"{base}_zero_point", np.zeros(1)).astype(np.float64)
            scale: np.ndarray = arrays[f"{base}_scale"].astype(np.float64)
            dtype = onnx.TensorProto.DataType.Name(types[name]).lower()
            found.append(FileWeight(name, ((q - zero) * scale).astype(np.float32), f"{dtype} quantize_dynamic",
                                    np.abs(np.broadcast_to(scale, q.shape))))
            used.update((name, f"{base}_scale", f"{base}_zero_point"))
    for name, array in arrays.items():
        if name not in used and array.ndim and (array.dtype.kind == "f" or types[name] == onnx.TensorProto.BFLOAT16):
            found.append(FileWeight(name, array.astype(np.float32, copy=False), _ENCODINGS.get(types[name], "float")))
    del arrays  # a weight transposed below then leaves no copy in its stored layout behind
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, value in enumerate(node.input):
            consumers.setdefault(value, []).append((node, index))
    for weight in found:
        if not weight.oriented and weight.value.ndim == 2:
            stored = _orientation(consumers, weight.name)
            if stored is not None:
                weight.oriented = True
                if not stored:
                    weight.value = np.ascontiguousarray(weight.value.T)
                    weight.step = None if weight.step is None else np.ascontiguousarray(weight.step.T)
    return found


def int8_activation_ops(model: onnx.ModelProto) -> list[str]:
    """The ops that make the file compute with 8-bit activations: ``quantize_dynamic``'s, and
    ``MatMulNBits`` at ``accuracy_level`` 4."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in INT8_ACTIVATIONS
                   or (n.op_type == "MatMulNBits" and _attrs(n).get("accuracy_level") == 4)})


def fp32_activations_copy(path: Path, folder: Path) -> Path:
    """A copy of ``path`` in ``folder`` whose ``MatMulNBits`` compute at ``accuracy_level`` 0 (fp32
    activations, the same weights), its weights in an external-data file beside it."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = 0
    target = folder / f"{path.stem}.level0.onnx"
    onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{target.name}.data", size_threshold=1024)
    return target
