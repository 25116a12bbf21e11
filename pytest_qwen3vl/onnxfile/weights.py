"""A file's weights as read from its structure: their type, and their names against golden's state dict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

QUANT_OPS = frozenset({
    "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul",
    "QLinearConv", "MatMulNBits", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "GatherBlockQuantized",
})
_LOW_BIT = ("INT8", "UINT8", "INT4", "UINT4")


@dataclass(frozen=True)
class WeightType:
    """The file's weight class and why: initializer elements by type, quantization operators."""

    name: str
    evidence: str


def weight_type(model: onnx.ModelProto) -> WeightType:
    """"quantized" if quantization operators or 8/4-bit elements outweigh float32, else "fp16"/"bf16"
    if those elements outweigh float32, else "fp32". Cast nodes are no evidence (an fp32 export has
    dozens for its grid arithmetic)."""
    import math

    import onnx

    elements: Counter[str] = Counter()
    for init in model.graph.initializer:
        elements[onnx.TensorProto.DataType.Name(init.data_type)] += math.prod(init.dims)
    quant = Counter(n.op_type for n in model.graph.node if n.op_type in QUANT_OPS)
    total = sum(elements.values()) or 1
    shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in elements.most_common(3))
    evidence = f"initializer elements {shares}" + (
        f"; quantization ops {', '.join(f'{k} {v}' for k, v in quant.most_common(3))}" if quant else "")
    if quant or sum(elements[k] for k in _LOW_BIT) > elements["FLOAT"]:
        return WeightType("quantized", evidence)
    for name, key in (("fp16", "FLOAT16"), ("bf16", "BFLOAT16")):
        if elements[key] > elements["FLOAT"]:
            return WeightType(name, evidence)
    return WeightType("fp32", evidence)


def state_key(name: str, keys: Mapping[str, Any]) -> str | None:
    """The state-dict key an initializer name ends with (``model.visual.blocks.0.norm1.weight`` ->
    ``blocks.0.norm1.weight``), else None."""
    parts = name.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in keys:
            return candidate
    return None


def misfits(initializers: Iterable[tuple[str, tuple[int, ...]]], shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Initializers (name, dims) named like a golden tensor whose shape is neither golden's nor its transpose."""
    found = []
    for name, dims in initializers:
        key = state_key(name.removesuffix("_quantized").removesuffix("_Transposed"), shapes)
        if key is None:
            continue
        shape, want = tuple(dims), shapes[key]
        if shape not in (want, want[::-1]):
            found.append(f"{name} is {list(shape)}, the config's {key} is {list(want)}")
    return found
