"""A file's initializers one at a time: the graph without their data, and each tensor read when asked.

protobuf cannot parse an inline file without holding all of its weights (1.3 GB at 4B), and the
arrays made from them come beside that: the peak of whoever reads a file's weights. Scanning
protobuf's wire format instead finds where each initializer's message lies in the file, so a reader
holds the graph (small) and one tensor's bytes at a time. onnx and numpy are imported inside the
functions.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx

_GRAPH, _INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
# TensorProto's data fields: float_data, int32_data, string_data, int64_data, raw_data, double_data,
# uint64_data. Everything else (name, type, dims, external_data entries) is kept in the graph.
_DATA = frozenset({4, 5, 6, 7, 9, 10, 11})


def _varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError(f"no protobuf varint at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of its key, start of its value, end) of each field in ``data[start:end]``;
    a length-delimited field's value starts after its length."""
    pos = start
    while pos < end:
        key_at = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 5:
            after = pos + 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            after = pos + length
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {key_at}")
        if after > end:
            raise ValueError(f"a field runs past its message at byte {key_at}")
        yield number, key_at, pos, after
        pos = after


def _delimited(number: int, body: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``body``."""
    out = bytearray()
    for value in ((number << 3) | 2, len(body)):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + body


class Initializers:
    """``path``'s graph with every initializer's data left out (``model``), and each initializer's
    array read from the file on its own (``array``). Raises ``ValueError`` for bytes that are no
    protobuf message."""

    def __init__(self, path: Path) -> None:
        import onnx

        self.path = path
        self._spans: dict[str, tuple[int, int]] = {}
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            model = bytearray()
            for number, key_at, start, end in _fields(data, 0, len(data)):
                if number != _GRAPH:
                    model += data[key_at:end]
                    continue
                graph = bytearray()
                for inner, inner_key, inner_start, inner_end in _fields(data, start, end):
                    if inner != _INITIALIZER:
                        graph += data[inner_key:inner_end]
                        continue
                    kept = b"".join(data[k:e] for n, k, _, e in _fields(data, inner_start, inner_end)
                                    if n not in _DATA)
                    graph += _delimited(_INITIALIZER, kept)
                    self._spans[onnx.TensorProto.FromString(kept).name] = (inner_start, inner_end)
                model += _delimited(_GRAPH, bytes(graph))
        try:
            self.model: onnx.ModelProto = onnx.ModelProto.FromString(bytes(model))
        except Exception as exc:  # protobuf's DecodeError
            raise ValueError(f"{path}: not an ONNX model ({exc})") from None

    def array(self, name: str) -> np.ndarray:
        """The initializer ``name`` as numpy reads it (external data from beside the file)."""
        import onnx
        from onnx import numpy_helper

        start, end = self._spans[name]
        with self.path.open("rb") as handle:
            handle.seek(start)
            tensor = onnx.TensorProto.FromString(handle.read(end - start))
        array: np.ndarray = numpy_helper.to_array(tensor, str(self.path.parent))
        return array
