"""A file's weights against the checkpoint's: each golden tensor found by name, by value, or not at all.

onnx and numpy are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.onnxfile.weights import state_key

if TYPE_CHECKING:
    import numpy as np


# Golden tensors without an initializer of their name are looked for by value up to this size: the
# LayerNorm and bias vectors an exporter deduplicates (a 4B weight matrix has 4 M elements).
BY_VALUE_ELEMENTS = 1 << 16


@dataclass
class WeightComparison:
    """Golden tensors found in the file by name (equal or different), by value under another name
    (deduplicated or folded by the exporter), or absent."""

    same: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    by_value: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def text(self) -> str:
        total = len(self.same) + len(self.differ)
        parts = [f"{len(self.differ)} of {total} golden tensors found by name differ"
                 + (f" ({', '.join(self.differ[:3])}{', ...' if len(self.differ) > 3 else ''})" if self.differ else "")]
        deepstack = [k for k in self.missing if k.startswith("deepstack_merger_list.")]
        others = [k for k in self.missing if k not in deepstack]
        if self.by_value:
            parts.append(f"{len(self.by_value)} more equal a tensor of the file under another name or are zero "
                         "(deduplicated, folded or dropped by the exporter)")
        if deepstack:
            parts.append("DeepStack not exported (its mergers' tensors are absent)")
        if others:
            parts.append(f"{len(others)} not found by name (nor by value, where small enough to look)")
        return "; ".join(parts)


def compare_weights(path: Path, state: Mapping[str, Any], limit: float = 1e-3) -> WeightComparison:
    """Each golden tensor against the file's initializer of that name: through ``Identity`` aliases
    (the exporter deduplicates equal tensors), dequantized for ``quantize_dynamic`` files (2 %), as
    is or transposed, within ``limit`` relative L2 (fp16 weights differ by ~1e-4). A golden tensor
    with no initializer of its name is looked for by value among the float initializers of its
    shape (the dynamo exporter keeps one of several equal LayerNorm tensors under one name), and an
    all-zero one counts as found (optimizers drop the Add of a zero bias). Only
    tensors up to ``BY_VALUE_ELEMENTS`` are looked for so, which bounds the work on a 4B file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    names: dict[str, str] = {}
    for name in [*inits, *aliases]:
        key = state_key(name.removesuffix("_quantized").removesuffix("_Transposed"), state)
        if key is not None:
            names.setdefault(key, name)

    def array(name: str) -> np.ndarray:
        value: np.ndarray = np.asarray(numpy_helper.to_array(inits[aliases.get(name, name)]), dtype=np.float64)
        return value

    def close(got: np.ndarray, ref: np.ndarray, bound: float) -> bool:
        if got.shape != ref.shape and got.T.shape == ref.shape:
            got = got.T
        norm = float(np.linalg.norm(ref)) or 1.0
        return got.shape == ref.shape and float(np.linalg.norm(got - ref)) <= bound * norm

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, init in inits.items():
        if init.data_type in floats:
            by_shape.setdefault(tuple(init.dims), []).append(name)

    result = WeightComparison()
    for key, tensor in state.items():
        ref = np.asarray(tensor, dtype=np.float64)
        name = names.get(key)
        if name is None and ref.size <= BY_VALUE_ELEMENTS:
            shapes = {ref.shape, ref.shape[::-1]}
            # an all-zero tensor needs no initializer: exporters drop the Add of a zero bias
            candidates = (c for shape in shapes for c in by_shape.get(shape, ()))
            found = not ref.any() or any(close(array(c), ref, limit) for c in candidates)
            (result.by_value if found else result.missing).append(key)
            continue
        if name is None:
            result.missing.append(key)
            continue
        bound = limit
        if name.endswith("_quantized"):
            base = name.removesuffix("_quantized")
            if f"{base}_scale" not in inits:
                result.missing.append(key)
                continue
            zero = array(f"{base}_zero_point") if f"{base}_zero_point" in inits else 0.0
            got, bound = (array(name) - zero) * array(f"{base}_scale"), 0.02
        else:
            got = array(name)
        (result.same if close(got, ref, bound) else result.differ).append(key)
    return result
