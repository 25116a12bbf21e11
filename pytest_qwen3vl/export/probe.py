"""What needs a user's ONNX file whole in memory, done where it costs the check nothing: its structure
without the weights' data, and module outputs on one grid for locating where it drifts from golden.

A probe is the value a module scope of the graph (``patch_embed``, ``blocks.3``, ``merger``, ...)
hands to the math outside it. Scopes are read from TorchScript node names (``/model/blocks.0/...``)
or, for the dynamo exporter, from each node's ``pkg.torch.onnx.name_scopes`` metadata.

Both need a copy of the file's weights in memory (1.3 GB at the 4B's size): a file with inline
weights cannot be parsed without them. In the check's own process that copy would sit beside the
golden PyTorch model, and allocators do not give such memory back reliably, so for a large file
both run in a child process (``structure`` from ``CHILD_FROM_BYTES`` on, ``probe_in_child``
always). Inside the probing child the weights are moved to a temporary external-data file before
the session loads, so the child itself holds about one copy at a time.

onnx, onnxruntime and numpy are imported inside the functions.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ArtefactError, ProbeFailed, child_failure

if TYPE_CHECKING:
    import numpy as np
    import onnx

# Under whatever attribute the builder's wrapper keeps the vision model (``/model/``, ``/vision/``, none).
_SCOPE = re.compile(r"^/(?:[\w.]+/)*?((?:blocks|deepstack_merger_list)\.\d+|patch_embed|merger)/")
# A dynamo node's module path (``model.blocks.0``, ``vision.merger``), outermost first in its name_scopes.
_MODULE = re.compile(r"(?:[\w.]+\.)?((?:blocks|deepstack_merger_list)\.\d+|patch_embed|merger)")
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_SHAPE_PLUMBING = ("Shape", "Gather", "Unsqueeze", "Concat")
NOT_ONNX = 3  # the structure child's exit status for a file that is no ONNX model
# Files from this size on are read in a child process (a tiny export is 5 MB, a 4B one 1.3 GB).
CHILD_FROM_BYTES = 64 << 20
# MLAS keeps a packed second copy of each Gemm/MatMul weight unless told not to: -34 % peak at 4B.
SESSION_CONFIG = {"session.disable_prepacking": "1"}


@dataclass
class Probed:
    """Probe names in graph order, the values computed for them, and ONNX Runtime's error if the run
    stopped at a node (then only probes upstream of that node are computed)."""

    probes: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    failure: str | None = None


def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with every initializer's data dropped: names, types and dims stay."""
    import onnx

    for init in model.graph.initializer:
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                     "string_data", "external_data"):
            init.ClearField(name)
        init.data_location = onnx.TensorProto.DEFAULT
    return model


def _parse(path: Path) -> onnx.ModelProto:
    """``path`` without its external data; ``ArtefactError`` when it is no ONNX model."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtefactError(f"--qwen3vl-onnx={path}: not an ONNX model ({type(exc).__name__})") from None


def structure(path: Path) -> onnx.ModelProto:
    """The model without its weights' data (external data is not read), parsed in a child process
    for a file of ``CHILD_FROM_BYTES`` or more. ``ArtefactError`` for a file that is no ONNX model,
    ``ProbeFailed`` when the child fails otherwise."""
    import onnx

    if path.stat().st_size < CHILD_FROM_BYTES:
        return strip_weights(_parse(path))
    with tempfile.TemporaryDirectory(prefix="qwen3vl-structure-") as tmp:
        slim = Path(tmp) / "structure.onnx"
        done = subprocess.run([sys.executable, "-m", __name__, "structure", str(path), str(slim)],
                              capture_output=True, text=True, check=False)
        if done.returncode == NOT_ONNX:
            raise ArtefactError(done.stdout.strip())
        if done.returncode != 0 or not slim.is_file():
            raise ProbeFailed(f"reading the file's structure failed: {child_failure(done.stderr, done.returncode)}")
        return onnx.load(str(slim))


def module_scope(node: onnx.NodeProto) -> str | None:
    """The probed module a node belongs to, from its TorchScript name or its dynamo metadata."""
    if match := _SCOPE.match(node.name):
        return match.group(1)
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            for scope in scopes if isinstance(scopes, list) else ():
                if isinstance(scope, str) and (match := _MODULE.fullmatch(scope)):
                    return match.group(1)
    return None


def find_probes(model: onnx.ModelProto) -> dict[str, str]:
    """Probe name -> ONNX value, in graph order: a module's output is the last value its scope hands
    to math outside it (shape plumbing excluded); ``pos_add`` is the scope-less Add that takes
    patch_embed's output."""
    nodes = list(model.graph.node)
    scope_of = {n.name: scope for n in nodes if (scope := module_scope(n)) is not None}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    probes: dict[str, str] = {}
    for node in nodes:
        scope = scope_of.get(node.name)
        if scope is None or node.op_type == "Constant":
            continue
        for out in node.output:
            outside = [c for c in consumers.get(out, []) if scope_of.get(c.name) != scope]
            if out in graph_outputs or any(c.op_type not in _SHAPE_PLUMBING for c in outside):
                probes[scope] = out
    if "patch_embed" in probes:
        for consumer in consumers.get(probes["patch_embed"], []):
            if consumer.op_type == "Add" and consumer.name not in scope_of:
                probes["pos_add"] = consumer.output[0]
    order = {value: i for i, node in enumerate(nodes) for value in node.output}
    return dict(sorted(probes.items(), key=lambda kv: order[kv[1]]))


def expose(model: onnx.ModelProto, values: Iterable[str]) -> onnx.ModelProto:
    """``model`` (changed in place) with ``values`` added as graph outputs, element types from shape
    inference. Shape inference copies the model: callers pass one whose weights are external."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    del inferred
    present = {o.name for o in model.graph.output}
    for name in values:
        if name not in present:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    return model


def consumed(node: onnx.NodeProto) -> set[str]:
    """Every value a node reads: its inputs and, for If, Loop and Scan, the outer values its
    subgraphs read (names made inside them come along; they are unique, so that is harmless)."""
    import onnx

    names = set(node.input)
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            for inner in graph.node:
                names |= consumed(inner)
    return names


def upstream(model: onnx.ModelProto, probes: Mapping[str, str], failed: str) -> list[str]:
    """Probes whose values do not depend on the node ``failed``."""
    tainted: set[str] = set()
    for node in model.graph.node:
        if node.name == failed or tainted.intersection(consumed(node)):
            tainted.update(node.output)
    return [p for p, v in probes.items() if v not in tainted]


def cut_to(model: onnx.ModelProto, outputs: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` (weights external, so small) with only what ``outputs`` need. Unlike
    ``onnx.utils.Extractor`` it keeps the outer values a Loop's body reads (transformers 5's
    TorchScript exports have such loops)."""
    import onnx

    wanted = set(outputs)
    needed, keep = set(wanted), []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed |= consumed(node)
    graph = model.graph
    cut = onnx.helper.make_graph(
        list(reversed(keep)), graph.name, list(graph.input), [o for o in graph.output if o.name in wanted],
        [i for i in graph.initializer if i.name in needed], value_info=list(graph.value_info),
    )
    return onnx.helper.make_model(cut, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                  functions=list(model.functions))


def probe(path: Path, feeds: Mapping[str, np.ndarray], folder: Path) -> Probed:
    """Run ``path`` with its probes exposed on ``feeds``; ``folder`` takes the probed copy and its weights."""
    import onnx

    from pytest_qwen3vl.export.runtime import failed_node, ort_session, runtime_errors, runtime_failure

    model = onnx.load(str(path))
    probes = find_probes(model)
    if not probes:
        return Probed()
    probed = folder / "probed.onnx"
    onnx.save_model(model, str(probed), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="probed.onnx.data", size_threshold=1024)
    del model  # its weights are now in the data file: one copy, on disk
    light = expose(onnx.load(str(probed), load_external_data=False), probes.values())
    onnx.save_model(light, str(probed))
    wanted = list(probes.values())
    by_value = {v: p for p, v in probes.items()}
    try:
        got = ort_session(probed, config=SESSION_CONFIG).run(wanted, dict(feeds))
        return Probed(list(probes), {by_value[v]: a for v, a in zip(wanted, got, strict=True)})
    except runtime_errors() as exc:
        failure = f"ONNX Runtime: {runtime_failure(exc)}"
        node = failed_node(exc)
    kept = upstream(light, probes, node[1]) if node else []
    if not kept:
        return Probed(list(probes), {}, failure)
    wanted = [probes[p] for p in kept]
    cut_path = folder / "cut.onnx"  # beside probed.onnx.data, which its initializers name
    onnx.save_model(cut_to(light, wanted), str(cut_path))
    got = ort_session(cut_path, config=SESSION_CONFIG).run(wanted, dict(feeds))
    return Probed(list(probes), {by_value[v]: a for v, a in zip(wanted, got, strict=True)}, failure)


def probe_in_child(path: Path, feeds: Mapping[str, np.ndarray]) -> Probed:
    """``probe`` in a child process; raises ``ProbeFailed`` when the child does not finish (our fault)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="qwen3vl-probe-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "feeds.npz", **dict(feeds))  # type: ignore[arg-type]
        done = subprocess.run([sys.executable, "-m", __name__, "probe", str(path), str(folder)],
                              capture_output=True, text=True, check=False)
        result = folder / "probed.json"
        if done.returncode != 0 or not result.is_file():
            raise ProbeFailed(f"the probe process failed: {child_failure(done.stderr, done.returncode)}")
        meta = json.loads(result.read_text())
        with np.load(folder / "values.npz") as stored:
            values = {name: stored[name] for name in stored.files}
    return Probed(meta["probes"], values, meta["failure"])


def main(argv: list[str] | None = None) -> None:
    """The child. ``python -m pytest_qwen3vl.export.probe structure FILE OUT`` writes FILE's structure
    to OUT; ``... probe FILE FOLDER`` reads FOLDER/feeds.npz and writes FOLDER/values.npz and
    FOLDER/probed.json."""
    import numpy as np
    import onnx

    command, *paths = argv or sys.argv[1:]
    path, folder = (Path(a) for a in paths)
    if command == "structure":
        try:
            model = _parse(path)
        except ArtefactError as exc:
            print(exc)
            raise SystemExit(NOT_ONNX) from None
        onnx.save_model(strip_weights(model), str(folder))
        return
    with np.load(folder / "feeds.npz") as stored:
        feeds: dict[str, Any] = {name: stored[name] for name in stored.files}
    found = probe(path, feeds, folder)
    np.savez(folder / "values.npz", **found.values)  # type: ignore[arg-type]
    (folder / "probed.json").write_text(json.dumps({"probes": found.probes, "failure": found.failure}))


if __name__ == "__main__":
    main()
