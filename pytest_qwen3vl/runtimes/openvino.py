"""OpenVINO on the CPU device, at the inference precision a user asks for (f32, bf16, f16).

OpenVINO takes a precision hint only where the CPU has the instructions: the precision a row names
is the one the compiled model reports, never the one asked for. Its errors arrive as its own
frontend classes or as ``RuntimeError`` texts starting "Exception from src/" (its C++ exceptions):
only those become refusals. openvino and numpy are imported inside the functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import RuntimeRefused, choose
from pytest_qwen3vl.runtimes.base import Runtime, Session
from pytest_qwen3vl.runtimes.onnxruntime import MESSAGE_CHARS, default_threads

if TYPE_CHECKING:
    import numpy as np

# OpenVINO's precision names, and the row of the tolerance table each one's arithmetic is judged by.
ARITHMETIC = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
PRECISIONS = tuple(ARITHMETIC)
_CPP_ERROR = "Exception from src/"
_NODE = re.compile(r"<Node\((\w+)\): ([^>]*)>")
_SEQUENCE_OPS = ("SequenceAt", "SplitToSequence", "SequenceEmpty", "SequenceInsert", "ConcatFromSequence")
# Measured (docs/runtimes.md): the dynamo exporter writes the grid-free recipes without sequence ops;
# TorchScript writes them for the per-image split, and for the report recipe under transformers 5.
SEQUENCE_HINT = "qwen3vl-export --recipe grid-free --exporter dynamo writes a file without sequence ops"


def is_openvino_error(exc: BaseException) -> bool:
    """Whether OpenVINO raised ``exc`` itself (a frontend failure or its C++ exception), not our code."""
    from openvino import frontend
    from openvino.exceptions import OVError

    own = (OVError, frontend.GeneralFailure, frontend.InitializationFailure, frontend.NotImplementedFailure,
           frontend.OpConversionFailure, frontend.OpValidationFailure)
    return isinstance(exc, own) or (type(exc) is RuntimeError and str(exc).startswith(_CPP_ERROR))


def openvino_failure(exc: BaseException) -> str:
    """OpenVINO's error in one line: the conversion summary (what failed, and why) when it gives one,
    else its last line of substance, without its source locations."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    failed = [line.removeprefix("-- ") for line in lines if line.startswith("-- Conversion is failed for:")]
    reasons = [line for line in lines if not line.startswith(("Exception from", "Check '", "--", "While ",
                                                              "FrontEnd API", "Model wasn't", "Summary"))]
    if failed:
        text = "; ".join(failed) + (f" ({reasons[0]})" if reasons else "")
    else:
        text = reasons[-1] if reasons else (lines[-1] if lines else type(exc).__name__)
    if any(op in text for op in _SEQUENCE_OPS):
        text += f"; {SEQUENCE_HINT}"
    return text if len(text) <= MESSAGE_CHARS * 2 else text[: MESSAGE_CHARS * 2 - 1] + "…"


def failed_node(exc: BaseException) -> tuple[str, str] | None:
    """The (op type, node name) OpenVINO's error names, or None."""
    node = _NODE.search(str(exc))
    return (node.group(1), node.group(2)) if node else None


def refused(exc: BaseException, *, loading: bool) -> RuntimeRefused:
    what = "does not load: " if loading else ""
    return RuntimeRefused(f"openvino: {what}{openvino_failure(exc)}", failed_node(exc))


class _OpenVINOSession(Session):
    """``names``: the file's output names in order, read before compiling: compiling drops Identity
    nodes and merges tensor names, so a compiled output may answer to its producer's name instead."""

    def __init__(self, compiled: Any, names: list[str]) -> None:
        self.request = compiled.create_infer_request()
        self.names = names

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        import numpy as np

        try:
            results = self.request.infer(dict(feeds))
        except Exception as exc:
            if not is_openvino_error(exc):
                raise
            raise refused(exc, loading=False) from exc
        # The request reuses its output buffers on the next run: copy what is handed out.
        return {name: np.array(results[self.names.index(name)], copy=True)
                for name in (list(outputs) if outputs else self.names)}


class OpenVINO(Runtime):
    """OpenVINO's CPU device. ``hint`` is the ``INFERENCE_PRECISION_HINT`` asked for (None: OpenVINO's
    own default, bf16 on CPUs with AMX); ``precision`` is what the CPU compiles at with that hint."""

    name = "openvino"

    def __init__(self, hint: str | None = None, threads: int | None = None) -> None:
        self.hint = choose("openvino precision", hint, PRECISIONS) if hint is not None else None
        self.config = {"INFERENCE_NUM_THREADS": str(threads or default_threads())}
        if self.hint is not None:
            self.config["INFERENCE_PRECISION_HINT"] = self.hint
        self.precision = self._probe_precision()
        self.arithmetic = ARITHMETIC[self.precision]

    def _probe_precision(self) -> str:
        """The precision a model compiles at under this hint, read from a one-node model: it depends on
        the CPU, not on the file, so every row of this runtime can name it before any file loads."""
        import numpy as np
        import openvino as ov
        from openvino import opset13

        x = opset13.parameter([1, 2], np.float32, name="x")
        probe = ov.Model([opset13.matmul(x, np.ones((2, 2), np.float32), False, False)], [x], "probe")
        return self._compiled_precision(ov.Core().compile_model(probe, "CPU", self.config))

    @staticmethod
    def _compiled_precision(compiled: Any) -> str:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())

    def load(self, path: Path) -> Session:
        return self._load(path, ())

    def load_exposing(self, path: Path, values: Sequence[str]) -> Session:
        """OpenVINO adds a model output for any tensor by name (``Model.add_outputs``); a value it merged
        away while reading is not added, and its probe is then not among the session's outputs."""
        return self._load(path, values)

    def _load(self, path: Path, values: Sequence[str]) -> Session:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            known = {name for op in model.get_ops() for port in op.outputs() for name in port.get_names()}
            if wanted := [value for value in values if value in known]:
                model.add_outputs(wanted)
            compiled = core.compile_model(model, "CPU", self.config)
        except Exception as exc:
            if not is_openvino_error(exc):
                raise
            raise refused(exc, loading=True) from exc
        ran = self._compiled_precision(compiled)
        if ran != self.precision:  # the row would name a precision that did not run
            raise RuntimeError(f"openvino compiled {path.name} at {ran}, the CPU at {self.precision}")
        # an added output answers to the value asked for, whichever other names its tensor carries
        names = [next((v for v in wanted if v in output.get_names()), output.get_any_name())
                 for output in model.outputs]
        return _OpenVINOSession(compiled, names)
