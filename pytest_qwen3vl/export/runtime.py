"""ONNX Runtime as a downstream runtime loads it, and how far its outputs are from PyTorch's.

onnxruntime and numpy are imported inside the functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.export.builder import POOLED_OUTPUT

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

# ONNX Runtime against PyTorch, float32, elementwise as numpy.allclose. Measured with torch 2.13 and
# onnxruntime 1.32 on the tiny config at 1x24x24 and 1x8x8+1x4x4: max abs 8.3e-7, relative L2 7.4e-7
# (at the real 4B dimensions: max abs 9e-7). Ten times that, an order of magnitude above what was
# measured and optimum's 1e-5 absolute.
PARITY_RTOL = 1e-5
PARITY_ATOL = 1e-5
# ONNX Runtime's reason as rows show it: enough for the node's complaint, short enough for a line
# that lists several grids' failures.
MESSAGE_CHARS = 160
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def default_threads() -> int:
    """The usable cores shared out among xdist workers, so parallel sessions don't oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, cores // max(1, workers))


def ort_session(
    onnx_path: str | os.PathLike[str] | bytes, *, threads: int | None = None, config: Mapping[str, str] | None = None
) -> onnxruntime.InferenceSession:
    """A CPU session with default graph optimisations, as a downstream runtime would load it.

    ``onnx_path`` may also be a serialized model; ``config`` holds session config entries
    (``session.disable_prepacking``: MLAS otherwise keeps a second, packed copy of every weight).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: a failing run raises, its log line would repeat it
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return onnxruntime.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_outputs(session: onnxruntime.InferenceSession, pixel_values: Any, grid_thw: Any) -> dict[str, np.ndarray]:
    """Every output by name; the inputs (torch tensors or arrays) feed the session's inputs in order."""
    specs = session.get_inputs()
    values = (pixel_values, grid_thw)[: len(specs)]
    feeds = {spec.name: _numpy(value) for spec, value in zip(specs, values, strict=True)}
    names = [spec.name for spec in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def run_pooled(session: onnxruntime.InferenceSession, pixel_values: Any, grid_thw: Any) -> np.ndarray:
    """The ``pooled_embeds`` output (the first output if none has that name)."""
    outputs = run_outputs(session, pixel_values, grid_thw)
    return outputs.get(POOLED_OUTPUT, next(iter(outputs.values())))


def split_outputs(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``pooled_embeds`` and the DeepStack features in layer order, from either layout: one output
    per layer (``deepstack_<i>`` or ``deepstack_features_<i>``), or one stacked ``deepstack_features``
    [D, N, H]. A file without DeepStack outputs gives an empty list."""
    import re

    pooled = outputs[POOLED_OUTPUT]
    if "deepstack_features" in outputs:
        return pooled, list(outputs["deepstack_features"])
    split = {}
    for name, value in outputs.items():
        if match := re.fullmatch(r"deepstack_(?:features_)?(\d+)", name):
            split[int(match[1])] = value
    return pooled, [split[i] for i in sorted(split)]


@dataclass(frozen=True)
class Parity:
    """How far a runtime's output is from the reference.

    ``max_rel`` is the largest absolute error over the largest reference magnitude, which stays
    meaningful where single reference values are near zero; ``rel_l2`` is ``|a - e| / |e|`` in L2.
    """

    max_abs: float
    max_rel: float
    rel_l2: float


def parity(actual: Any, expected: Any) -> Parity:
    """Errors of ``actual`` against ``expected`` (arrays or tensors of the same shape), in float64."""
    import numpy as np

    a = np.asarray(_numpy(actual), dtype=np.float64)
    e = np.asarray(_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: actual {a.shape}, expected {e.shape}")
    diff = np.abs(a - e)
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(e).max(initial=0.0))
    norm = float(np.linalg.norm(e))
    return Parity(
        max_abs=max_abs,
        max_rel=max_abs / scale if scale else max_abs,
        rel_l2=float(np.linalg.norm(a - e)) / norm if norm else float(np.linalg.norm(a - e)),
    )


def _numpy(value: Any) -> Any:
    """A torch tensor as a numpy array (without importing torch); anything else as it is."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def runtime_errors() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a model it cannot load or run (its own classes, without a common
    base): a verdict on a file catches only these, so a fault of ours never reads as the file's."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (state.Fail, state.InvalidArgument, state.InvalidGraph, state.InvalidProtobuf, state.NoSuchFile,
            state.NotImplemented, state.RuntimeException, state.EPFail)


def failed_node(exc: BaseException) -> tuple[str, str] | None:
    """The (op type, node name) ONNX Runtime's error names ("running X node. Name:'...'"), or None
    when the error is not a node's failure (a load error, or not ONNX Runtime's)."""
    node = _NODE.search(" ".join(str(exc).split()))
    return (node.group(1), node.group(2)) if node else None


def runtime_failure(exc: BaseException) -> str:
    """ONNX Runtime's error in one line: the failing node and the reason, without its source location."""
    text = " ".join(str(exc).split())
    reason = text.rpartition("Status Message: ")[2]
    reason = reason.rpartition(" was false. ")[2] or reason
    if len(reason) > MESSAGE_CHARS:
        reason = reason[: MESSAGE_CHARS - 1] + "…"
    node = failed_node(exc)
    return f"{node[0]} node {node[1]}: {reason}" if node else f"{type(exc).__name__}: {reason}"
