"""An ONNX file's structure without its weights' data: what start-up, the interface and the weight
type read, for any size of file.

A file with inline weights cannot be parsed without them; from ``CHILD_FROM_BYTES`` on it is parsed
in a child process that writes back the structure alone, so the check's own process never holds a
second copy of a large file's weights. onnx is imported inside the functions.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import ArtefactError, run_module

if TYPE_CHECKING:
    import onnx

NOT_ONNX = 3  # the child's exit status for a file that is no ONNX model
# Files from this size on are read in a child process (a tiny export is 5 MB, a 4B one 1.3 GB).
CHILD_FROM_BYTES = 64 << 20


def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with every initializer's data dropped: names, types and dims stay,
    and where external data was (its ``external_data`` entries, no longer loaded: ``external_files``)."""
    import onnx

    for init in model.graph.initializer:
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                     "string_data"):
            init.ClearField(name)
        init.data_location = onnx.TensorProto.DEFAULT
    return model


def external_files(model: onnx.ModelProto, path: Path) -> tuple[str, ...]:
    """The external data files of ``path`` (relative to its folder) that its initializers name, each
    checked to exist and to hold the bytes asked of it: ``ArtefactError`` naming the first that does not
    (a file copied without its ``.data``), before any runtime fails on it."""
    needed: dict[str, int] = {}
    for init in model.graph.initializer:
        entries = {entry.key: entry.value for entry in init.external_data}
        if "location" in entries:
            end = int(entries.get("offset", 0) or 0) + int(entries.get("length", 0) or 0)
            needed[entries["location"]] = max(needed.get(entries["location"], 0), end)
    for location, end in needed.items():
        data = path.parent / location
        if not data.is_file():
            raise ArtefactError(f"{path}: its external data {location} is missing (expected next to it: {data})")
        if data.stat().st_size < end:
            raise ArtefactError(f"{path}: its external data {location} has {data.stat().st_size} bytes, "
                                f"the file reads up to byte {end} (truncated)")
    return tuple(sorted(needed))


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


def _parse(path: Path) -> onnx.ModelProto:
    """``path`` without its external data; ``ArtefactError`` when it is no ONNX model."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtefactError(f"{path}: not an ONNX model ({type(exc).__name__})") from None


def structure(path: Path) -> onnx.ModelProto:
    """The model without its weights' data (external data is not read), parsed in a child process
    for a file of ``CHILD_FROM_BYTES`` or more. ``ArtefactError`` for a file that is no ONNX model,
    ``ProbeFailed`` when the child fails otherwise."""
    import onnx

    if path.stat().st_size < CHILD_FROM_BYTES:
        model = strip_weights(_parse(path))
    else:
        with tempfile.TemporaryDirectory(prefix="qwen3vl-structure-") as tmp:
            slim = Path(tmp) / "structure.onnx"
            done = run_module(__name__, str(path), str(slim), what="reading the file's structure", result=slim,
                              passes=(NOT_ONNX,))
            if done.returncode == NOT_ONNX:
                raise ArtefactError(done.stdout.strip())
            model = onnx.load(str(slim))
    if not model.ir_version or not model.graph.output:
        raise ArtefactError(f"{path}: not an ONNX model (no graph outputs)")
    return model


def main(argv: list[str] | None = None) -> None:
    """The child: ``python -m pytest_qwen3vl.onnxfile.structure FILE OUT`` writes FILE's structure to OUT."""
    import onnx

    path, out = (Path(a) for a in (argv or sys.argv[1:]))
    try:
        model = _parse(path)
    except ArtefactError as exc:
        print(exc)
        raise SystemExit(NOT_ONNX) from None
    onnx.save_model(strip_weights(model), str(out))


if __name__ == "__main__":
    main()
