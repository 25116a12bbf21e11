"""What an exported ONNX file promises: its graph signature, and a digest of what it computes.

A signature is a plain dict meant for snapshots. Its ``contract`` part (opset, input and output
names, element types, dims) is what a downstream runtime relies on and should hold with any
torch or onnx version; ``initializers`` and ``operators`` depend on how the exporter lowers the
model and change with torch versions, so they are kept apart.

onnx is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

CONSTANTS_BUCKET = "<constants>"
# A module path such as ``model.blocks.0.attn.qkv.weight``; exporter-made constants look like
# ``onnx::MatMul_1234``, ``/model/Constant_output_0`` or a bare number.
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+")


def graph_signature(onnx_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Contract (opset, inputs, outputs), initializers grouped by owning module, operator histogram.

    Initializer groups map a module path (the name without its last part) to the sorted leaf
    names; every initializer that is not a module path counts in ``"<constants>"``. Weights are
    not loaded.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    initializer_names = [init.name for init in graph.initializer]
    stored = set(initializer_names)
    return {
        "contract": {
            "opset": _default_opset(model),
            "inputs": [value_info(v) for v in graph.input if v.name not in stored],
            "outputs": [value_info(v) for v in graph.output],
        },
        "initializers": group_initializers(initializer_names),
        "operators": dict(sorted(Counter(_op_type(node) for node in _nodes(graph)).items())),
    }


def group_initializers(names: list[str]) -> dict[str, Any]:
    """``{"model.merger.linear_fc1": ["bias", "weight"], ..., "<constants>": 3}``, keys sorted."""
    groups: dict[str, list[str]] = {}
    constants = 0
    for name in names:
        if _MODULE_PATH.fullmatch(name):
            owner, _, leaf = name.rpartition(".")
            groups.setdefault(owner, []).append(leaf)
        else:
            constants += 1
    result: dict[str, Any] = {owner: sorted(leaves) for owner, leaves in sorted(groups.items())}
    result[CONSTANTS_BUCKET] = constants
    return result


def graph_digest(onnx_path: str | os.PathLike[str]) -> str:
    """sha256 of the serialized graph with its weights, less doc strings and node metadata.

    Two exports with the same digest compute the same thing the same way. Doc strings and
    metadata can carry source paths, which differ between a golden and a modified file even when
    the graphs are the same; the model-level producer fields are outside the graph anyway.
    """
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    graph.doc_string = ""
    for node in _nodes(graph):
        node.doc_string = ""
        del node.metadata_props[:]
    return hashlib.sha256(graph.SerializeToString()).hexdigest()


def _default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """Name, element type and dims (``dim_param`` names, sizes, or None) of a graph input or output."""
    tensor = value.type.tensor_type
    dims: list[str | int | None] | None = None
    if tensor.HasField("shape"):
        dims = [
            d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
            for d in tensor.shape.dim
        ]
    return {"name": value.name, "elem_type": _elem_type(tensor.elem_type), "dims": dims}


def _elem_type(code: int) -> str:
    """numpy's name for an ONNX element type ("float32", "int64"), else ONNX's own in lower case."""
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(code).name)
    except (KeyError, TypeError, ValueError):
        return str(onnx.TensorProto.DataType.Name(code)).lower()


def _op_type(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those of subgraphs (If and Loop bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _nodes(subgraph)
