"""Where a grid goes wrong: the file's module outputs exposed as extra outputs on a copy of its
graph, run in a child process, and compared with golden's activations one by one.

The probed copy is a second copy of the weights, so the child moves them to a temporary
external-data file before it opens its session: the check's own process never holds them. A child
that fails is our fault: the row says "not located" with its error line, never a verdict.

A NaN or Inf is located on the runtime that produced it instead (``first_nonfinite``): the same probes
added as outputs by a runtime that can (``Runtime.load_exposing``), checked for values that are not finite.

onnx, onnxruntime and numpy are imported inside the functions.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import RuntimeRefused, run_module
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.onnxfile.structure import consumed
from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, OnnxRuntimeCPU

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from pytest_qwen3vl.runtimes.base import Runtime

# Under whatever attribute the builder's wrapper keeps the vision model (``/model/``, ``/vision/``, none).
_SCOPE = re.compile(r"^/(?:[\w.]+/)*?((?:blocks|deepstack_merger_list|merger_list)\.\d+|patch_embed|merger)/")
# A dynamo node's module path (``model.blocks.0``, ``vision.merger``), outermost first in its name_scopes.
_MODULE = re.compile(r"(?:[\w.]+\.)?((?:blocks|deepstack_merger_list|merger_list)\.\d+|patch_embed|merger)")
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_SHAPE_PLUMBING = ("Shape", "Gather", "Unsqueeze", "Concat")


@dataclass(frozen=True)
class Location:
    """Where a grid goes wrong: the first probe outside tolerance, and each probe's relative L2."""

    grid: Grid
    first_bad: str | None
    # relative L2, or why none (its size differs from golden's), or None: not computed (after the failing node)
    probes: tuple[tuple[str, float | str | None], ...]
    failure: str | None
    problem: str | None = None  # ours: the probe process failed, so nothing is said of the file

    def text(self) -> str:
        shown = {name: value for name, value in self.probes}
        if self.problem is not None:
            return f"{self.grid.id}: not located ({self.problem})"
        if not self.probes:
            return (f"{self.grid.id}: not located: nodes carry no module scopes (TorchScript names "
                    "/<wrapper>/<module>/..., or dynamo's name_scopes metadata)")
        if self.first_bad is None and self.failure is None:
            return f"{self.grid.id}: every module matches golden: the outputs are wired otherwise (order or names)"
        if self.first_bad is None:
            computed = [n for n, v in self.probes if v is not None]
            stopped = next((n for n, v in self.probes if v is None), None)
            if computed and stopped is not None:
                return (f"{self.grid.id}: every module matches through {computed[-1]}; the run stops before "
                        f"{stopped}'s output ({self.failure})")
            return f"{self.grid.id}: every module matches up to where the run stops ({self.failure})"
        before = [n for n, _ in self.probes[: [n for n, _ in self.probes].index(self.first_bad)]]
        ok = f"right through {before[-1]}, " if before else ""
        value = shown[self.first_bad]
        drift = "not computed" if value is None else f"relative L2 {value:.2g}"
        unmatched = "".join(f"; {n}'s output not found ({v})" for n, v in self.probes if isinstance(v, str))
        return f"{self.grid.id}: {ok}drift starts at {self.first_bad} ({drift}){unmatched}"


@dataclass
class Probed:
    """Probe names in graph order, the values computed for them, and ONNX Runtime's error if the run
    stopped at a node (then only probes upstream of that node are computed)."""

    probes: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    failure: str | None = None


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
    producer = {value: node for node in nodes for value in node.output}
    weights = {i.name for i in model.graph.initializer}
    for node in nodes:
        # a rewrite's node (a quantizer's MatMulNBits, a Gemm split into MatMul and Add) carries no scope:
        # it belongs to the module whose value it reads when it applies that module's own weights
        if node.name in scope_of or not node.input or node.input[0] not in producer:
            continue
        scope = scope_of.get(producer[node.input[0]].name)
        if scope is not None and any(v in weights and f"{scope}." in v for v in node.input[1:]):
            scope_of[node.name] = scope
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


def sort_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with each node after the nodes whose values it reads, subgraphs'
    outer reads included; a sorted graph keeps its order. ONNX Runtime sorts a graph itself, so files
    come out of order (Olive's GemmToMatMulAdd appends its MatMul and Add at the end), while probes,
    taint and cuts here follow node order."""
    nodes = list(model.graph.node)
    producer = {value: i for i, node in enumerate(nodes) for value in node.output}
    reads = [sorted({producer[v] for v in consumed(node) if v in producer} - {i}) for i, node in enumerate(nodes)]
    placed: set[int] = set()
    order: list[int] = []
    for start in range(len(nodes)):
        stack = [(start, 0)]
        while stack:  # depth first, earlier producers first: an already sorted graph comes out unchanged
            i, next_read = stack.pop()
            if i in placed:
                continue
            pending = [r for r in reads[i][next_read:] if r not in placed]
            if pending:
                stack += [(i, reads[i].index(pending[0]) + 1), (pending[0], 0)]
                continue
            placed.add(i)
            order.append(i)
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    return model


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


def probe(path: Path, feeds: Sequence[Mapping[str, np.ndarray]], folder: Path) -> list[Probed]:
    """Run ``path`` with its probes exposed on each of ``feeds`` (one grid each; the copy is made and
    loaded once for all of them); ``folder`` takes the probed copy and its weights."""
    import onnx

    model = sort_nodes(onnx.load(str(path)))
    probes = find_probes(model)
    if not probes:
        return [Probed() for _ in feeds]
    probed = folder / "probed.onnx"
    onnx.save_model(model, str(probed), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="probed.onnx.data", size_threshold=1024)
    del model  # its weights are now in the data file: one copy, on disk
    light = expose(onnx.load(str(probed), load_external_data=False), probes.values())
    onnx.save_model(light, str(probed))
    wanted = list(probes.values())
    by_value = {v: p for p, v in probes.items()}
    runtime = OnnxRuntimeCPU(config=LOW_MEMORY)
    session = runtime.load(probed)
    found = []
    for index, feed in enumerate(feeds):
        try:
            got = session.run(feed, wanted)
            found.append(Probed(list(probes), {by_value[v]: got[v] for v in wanted}))
            continue
        except RuntimeRefused as exc:
            failure, node = str(exc), exc.node
        kept = upstream(light, probes, node[1]) if node else []
        if not kept:
            found.append(Probed(list(probes), {}, failure))
            continue
        cut_wanted = [probes[p] for p in kept]
        cut_path = folder / f"cut-{index}.onnx"  # beside probed.onnx.data, which its initializers name
        onnx.save_model(cut_to(light, cut_wanted), str(cut_path))
        got = runtime.load(cut_path).run(feed, cut_wanted)
        found.append(Probed(list(probes), {by_value[v]: got[v] for v in cut_wanted}, failure))
    return found


def compare_probes(found: Probed, golden: Mapping[str, np.ndarray], grid: Grid, rel_l2: float) -> Location:
    """The probed module outputs against ``golden``'s activations: each one's relative L2, and the first
    that leaves ``rel_l2``. One probe can be compared with several goldens (the file's own weights,
    the checkpoint's)."""
    from pytest_qwen3vl.judge.tolerance import measure

    if not found.probes:
        return Location(grid, None, (), None)
    rows: list[tuple[str, float | str | None]] = []
    first_bad = None
    for name in found.probes:
        if name not in found.values or name not in golden:
            rows.append((name, None))
            if found.failure is None and first_bad is None:
                first_bad = name
            continue
        got, ref = found.values[name], golden[name]
        if got.size != ref.size:  # not the module's output: no distance, and no blame
            rows.append((name, f"{got.size} values, golden {ref.size}"))
            continue
        rel = measure(got.reshape(ref.shape), ref, name, name).rel_l2
        rows.append((name, rel))
        if first_bad is None and rel > rel_l2:
            first_bad = name
    if first_bad is None and found.failure is not None:
        computed = [n for n, v in rows if v is not None]
        remaining = [n for n, v in rows if v is None]
        first_bad = remaining[0] if remaining and not computed else None
    return Location(grid, first_bad, tuple(rows), found.failure)


def first_nonfinite(path: Path, runtime: Runtime, feeds: Mapping[str, np.ndarray]) -> str:
    """Where a NaN or Inf first appears when ``runtime`` runs ``path`` on ``feeds``: the first module
    output (graph order) holding one, found on that runtime at its own precision (an overflow in fp16
    arithmetic exists only there), or why it could not be located there."""
    import numpy as np
    import onnx

    where = f"where the NaN/Inf first appears could not be located on {runtime.label}"
    probes = find_probes(onnx.load(str(path), load_external_data=False))
    if not probes:
        return f"{where}: nodes carry no module scopes"
    try:
        session = runtime.load_exposing(path, list(probes.values()))
        values = session.run(feeds) if session is not None else None
    except RuntimeRefused as exc:
        return f"{where}: {exc}"
    if values is None:
        return f"{where}: it does not expose intermediate outputs"
    exposed = [(name, value) for name, value in probes.items() if value in values]
    if not exposed:
        return f"{where}: it keeps none of the module outputs"
    clean: list[str] = []
    for name, value in exposed:
        bad = int(values[value].size - np.isfinite(values[value]).sum())
        if bad:
            before = f"; right through {clean[-1]}" if clean else ""
            return (f"the first NaN/Inf is in {name}'s output on {runtime.label} ({bad} of {values[value].size} "
                    f"values{before})")
        clean.append(name)
    return f"{where}: every module output it exposes is finite ({', '.join(clean)})"


def probe_in_child(path: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[Probed]:
    """``probe`` in a child process, one ``Probed`` per grid's ``feeds``; raises ``ProbeFailed`` when the
    child does not finish (our fault)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="qwen3vl-probe-") as tmp:
        folder = Path(tmp)
        for index, feed in enumerate(feeds):
            np.savez(folder / f"feeds-{index}.npz", **dict(feed))  # type: ignore[arg-type]
        result = folder / "probed.json"
        run_module(__name__, str(path), str(folder), str(len(feeds)), what="the probe process", result=result)
        found = []
        for index, meta in enumerate(json.loads(result.read_text())):
            with np.load(folder / f"values-{index}.npz") as stored:
                values = {name: stored[name] for name in stored.files}
            found.append(Probed(meta["probes"], values, meta["failure"]))
    return found


def main(argv: list[str] | None = None) -> None:
    """The child. ``python -m pytest_qwen3vl.judge.locate FILE FOLDER COUNT`` reads FOLDER/feeds-<i>.npz
    and writes FOLDER/values-<i>.npz for each of COUNT grids, and FOLDER/probed.json."""
    import numpy as np

    path, folder, count = (argv or sys.argv[1:])
    feeds: list[dict[str, Any]] = []
    for index in range(int(count)):
        with np.load(Path(folder) / f"feeds-{index}.npz") as stored:
            feeds.append({name: stored[name] for name in stored.files})
    found = probe(Path(path), feeds, Path(folder))
    for index, probed in enumerate(found):
        np.savez(Path(folder) / f"values-{index}.npz", **probed.values)  # type: ignore[arg-type]
    (Path(folder) / "probed.json").write_text(json.dumps([{"probes": p.probes, "failure": p.failure}
                                                          for p in found]))


if __name__ == "__main__":
    main()
