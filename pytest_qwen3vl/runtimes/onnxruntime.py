"""ONNX Runtime on the CPU, as a downstream runtime loads it: the reference runtime of every verdict.

The same code runs a file on ONNX Runtime's GPU providers (CUDA, TensorRT) with another provider list,
so the CPU self-tests cover their path. onnxruntime and numpy are imported inside the functions.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import NotRunnable, RuntimeRefused
from pytest_qwen3vl.metrics import as_numpy
from pytest_qwen3vl.onnxfile.names import POOLED_OUTPUT
from pytest_qwen3vl.runtimes.base import Runtime, Session

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

# ONNX Runtime's reason as rows show it: enough for the node's complaint, short enough for a line
# that lists several grids' failures.
MESSAGE_CHARS = 160
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")
# MLAS keeps a packed second copy of each Gemm/MatMul weight unless told not to: -34 % peak at 4B.
LOW_MEMORY = {"session.disable_prepacking": "1"}
# Operators whose CPU kernel computes at the file's own arithmetic only on prepacked weights: unpacked,
# MatMulNBits ignores accuracy_level 4 and computes with fp32 activations (Olive's int4 file: relative
# L2 1.2e-2 between the two, measured on AVX-512 VNNI with ONNX Runtime 1.32), so a check without
# prepacking would not see what a downstream session computes.
PACKED_ONLY = frozenset({"MatMulNBits"})
CPU = "CPUExecutionProvider"
# A provider as ``InferenceSession`` takes it: its name, or its name and its options.
Provider = str | tuple[str, Mapping[str, str]]


# Set by the plugin in an xdist worker where fewer workers than started have work: how many do.
BUSY_WORKERS = "PYTEST_QWEN3VL_BUSY_WORKERS"


def default_threads() -> int:
    """The usable cores shared out among the xdist workers that have work, so parallel sessions don't
    oversubscribe and a lone busy worker does not run on a share of an idle machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = int(os.environ.get(BUSY_WORKERS) or os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, cores // max(1, workers))


def ort_session(
    onnx_path: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
    providers: Sequence[Provider] = (CPU,),
) -> onnxruntime.InferenceSession:
    """A session with default graph optimisations, as a downstream runtime would load it (on the CPU
    unless ``providers`` names others).

    ``onnx_path`` may also be a serialized model; ``config`` holds session config entries
    (``LOW_MEMORY``: MLAS otherwise keeps a second, packed copy of every weight).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: a failing run raises, its log line would repeat it
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return onnxruntime.InferenceSession(source, sess_options=options, providers=list(providers))


def run_outputs(session: onnxruntime.InferenceSession, pixel_values: Any, grid_thw: Any) -> dict[str, np.ndarray]:
    """Every output by name; the inputs (torch tensors or arrays) feed the session's inputs in order."""
    specs = session.get_inputs()
    values = (pixel_values, grid_thw)[: len(specs)]
    feeds = {spec.name: as_numpy(value) for spec, value in zip(specs, values, strict=True)}
    names = [spec.name for spec in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def run_pooled(session: onnxruntime.InferenceSession, pixel_values: Any, grid_thw: Any) -> np.ndarray:
    """The ``pooled_embeds`` output (the first output if none has that name)."""
    outputs = run_outputs(session, pixel_values, grid_thw)
    return outputs.get(POOLED_OUTPUT, next(iter(outputs.values())))


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


def refused(exc: BaseException) -> RuntimeRefused:
    """ONNX Runtime's own error as the runtime interface's refusal."""
    return RuntimeRefused(f"ONNX Runtime: {runtime_failure(exc)}", failed_node(exc))


class OrtSession(Session):
    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else [o.name for o in self.session.get_outputs()]
        try:
            values = self.session.run(names, dict(feeds))
        except runtime_errors() as exc:
            raise refused(exc) from exc
        return dict(zip(names, values, strict=True))


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


class OnnxRuntimeCPU(Runtime):
    """ONNX Runtime at its default optimisation level: its CPU provider at fp32 unless ``providers``
    names another (a GPU runtime then also gives its ``name`` and ``precision``)."""

    name = "onnxruntime"
    precision = "fp32"
    session_class: type[OrtSession] = OrtSession

    def __init__(
        self,
        config: Mapping[str, str] | None = None,
        threads: int | None = None,
        providers: Sequence[Provider] = (CPU,),
    ) -> None:
        self.config = dict(config or {})
        self.threads = threads
        self.providers = tuple(providers)

    def for_ops(self, ops: Collection[str]) -> OnnxRuntimeCPU:
        """Without ``LOW_MEMORY`` for a file holding an operator of ``PACKED_ONLY``, as a downstream
        session loads it (their packed weights are 4-bit: little memory)."""
        if not PACKED_ONLY.intersection(ops) or "session.disable_prepacking" not in self.config:
            return self
        runtime = copy.copy(self)
        runtime.config = {k: v for k, v in self.config.items() if k != "session.disable_prepacking"}
        return runtime

    def load(self, path: Path) -> Session:
        try:
            session = ort_session(path, threads=self.threads, config=self.config, providers=self.providers)
        except runtime_errors() as exc:
            raise refused(exc) from exc
        # ONNX Runtime falls back to the CPU, with a warning only, when a provider does not start (a
        # build without it, no GPU, no CUDA libraries): a row would name a provider that did not run.
        wanted, ran = provider_name(self.providers[0]), session.get_providers()[0]
        if ran != wanted:
            raise NotRunnable(f"not run: ONNX Runtime loads {path.name} on {ran}, not on {wanted} (a build "
                              f"without {wanted}, no GPU, or its libraries not found)")
        return self.session_class(session)
