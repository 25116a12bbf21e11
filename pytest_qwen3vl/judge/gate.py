"""What a modeling file's DeepStack condition computes under each exporter, measured.

The whole vision model does not export with torch.export (a data-dependent guard stops it before
the first block returns), so the condition is isolated: the ``if`` test is taken from the file's
own source (``source.diff.find_deepstack_if``), compiled into ``condition(self, layer_num)`` with
the file's module globals (its ``torch``, its ``is_torchdynamo_compiling``), and called inside
``Gate``, a module whose forward returns ``2x + 1`` where the test holds and ``2x`` where it does
not. The answer is read back from what each exporter produced: the traced module, the
``ExportedProgram``'s module, or the ONNX file run in ONNX Runtime. ``2x`` rather than ``x``: an
ONNX graph whose output is its input does not load in ONNX Runtime.

One condition costs about 20 small exports; the table is stored in an ``ArtifactCache`` keyed by
the condition's text, the library versions and this file, so a session (and the next) pays once.

torch and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from pytest_qwen3vl.export.builder import quiet_logging
from pytest_qwen3vl.source.diff import FLAG, find_deepstack_if, read_source
from pytest_qwen3vl.store.cache import ArtifactCache, Unpublished, code_digest, file_digest
from pytest_qwen3vl.versions import EXPORT_LIBRARIES, library_versions

if TYPE_CHECKING:
    import torch

# Each way of running the gate, and the mode of ``source.diff.MODES`` whose predicates it sets.
EXPORTER_MODES: dict[str, str] = {
    "eager": "eager",
    "torch.compile": "torch.compile",  # not an exporter: compiled inference, which must keep DeepStack
    "torch.jit.trace": "torch.jit.trace",
    "export strict": "torch.export",
    "export non-strict": "torch.export",
    "onnx dynamo=True": "torch.export",
    "onnx dynamo=False": "torch.jit.trace",
}
EXPORTERS = tuple(EXPORTER_MODES)
ONNX_EXPORTERS = tuple(name for name in EXPORTERS if name != "eager" and name != "torch.compile")
FLAGS: dict[str, bool | None] = {"unset": None, "False": False, "True": True}
RUN, SKIP = "run", "skip"
GATE_OPSET = 18
DEEPSTACK_LAYER = 1  # a layer in the gate's deepstack_visual_indexes
GATE_INDEXES = (1, 2, 3)

Condition = Callable[[Any, int], Any]
Cell = tuple[str, str]  # (exporter, flag label)


@dataclass(frozen=True)
class GateTable:
    """``run``/``skip`` per (exporter, flag) at a DeepStack layer; a cell that could not be measured
    holds ``None`` and its reason is in ``errors`` (a condition that raises is a ``raises ...`` value)."""

    condition: str
    cells: dict[Cell, str | None]
    errors: dict[Cell, str]
    seconds: float

    def runs(self, exporter: str, flag: str) -> str | None:
        return self.cells[(exporter, flag)]

    def to_json(self) -> str:
        return json.dumps({
            "condition": self.condition,
            "cells": [[e, f, v] for (e, f), v in self.cells.items()],
            "errors": [[e, f, v] for (e, f), v in self.errors.items()],
            "seconds": self.seconds,
        })

    @classmethod
    def from_json(cls, text: str) -> GateTable:
        data = json.loads(text)
        return cls(
            str(data["condition"]),
            {(e, f): v for e, f, v in data["cells"]},
            {(e, f): str(v) for e, f, v in data["errors"]},
            float(data["seconds"]),
        )


def condition_of(path: Path) -> str:
    """The DeepStack ``if`` test of a modeling file, found by its body (a fork's test may be anything)."""
    source = read_source(path)
    node = find_deepstack_if(source.tree, any_test=True)
    if node is None:
        raise LookupError(f"{path}: no `if` in Qwen3VLVisionModel.forward whose body runs deepstack_merger_list")
    return ast.unparse(node.test)


def compile_condition(test: str, module: ModuleType | Mapping[str, Any]) -> Condition:
    """``def condition(self, layer_num): return <test>`` with ``module``'s globals, as the file runs it."""
    tree = ast.parse("def condition(self, layer_num):\n    return None\n")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef) and isinstance(function.body[0], ast.Return)
    function.body[0].value = ast.parse(test, mode="eval").body
    namespace = dict(vars(module) if isinstance(module, ModuleType) else module)
    exec(compile(ast.fix_missing_locations(tree), "<DeepStack condition>", "exec"), namespace)
    return cast("Condition", namespace["condition"])


def _gate_class() -> type[torch.nn.Module]:
    import torch

    class Gate(torch.nn.Module):
        """``2x + 1`` where the condition holds at ``layer_num``, else ``2x``; carries the flag as the model does."""

        def __init__(self, condition: Condition, flag: bool | None, layer_num: int = DEEPSTACK_LAYER) -> None:
            super().__init__()
            self.condition = condition
            self.layer_num = layer_num
            self.deepstack_visual_indexes = list(GATE_INDEXES)
            if flag is not None:
                setattr(self, FLAG, flag)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.condition(self, self.layer_num):
                return 2 * x + 1
            return 2 * x

    return Gate


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print progress, log and warn; none of it is a result."""
    chatter = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
        quiet_logging(),
    ):
        warnings.simplefilter("ignore")
        yield


def run_under(module: torch.nn.Module, exporter: str, x: torch.Tensor, folder: Path) -> torch.Tensor:
    """Export (or compile, or trace) ``module`` with ``exporter`` and run what that produced on ``x``."""
    import numpy as np
    import torch

    from pytest_qwen3vl.runtimes.onnxruntime import ort_session

    with _quiet(), torch.no_grad():
        if exporter == "eager":
            return module(x)
        if exporter == "torch.compile":
            torch._dynamo.reset()
            return torch.compile(module, backend="eager", fullgraph=True)(x)
        if exporter == "torch.jit.trace":
            return torch.jit.trace(module, (x,), check_trace=False)(x)
        if exporter.startswith("export"):
            program = torch.export.export(module, (x,), strict=exporter == "export strict")
            return program.module()(x)
        path = folder / "gate.onnx"
        torch.onnx.export(
            module, (x,), str(path), dynamo=exporter == "onnx dynamo=True", input_names=["x"], opset_version=GATE_OPSET
        )
        session = ort_session(path, threads=1)
        (out,) = session.run(None, {"x": x.numpy()})
        return torch.from_numpy(np.asarray(out))


def added_by(out: torch.Tensor, x: torch.Tensor) -> int:
    """The integer the module added to ``2x`` (the same for every element)."""
    delta = (out - 2 * x).round()
    if not bool((delta == delta.flatten()[0]).all()):
        raise ValueError(f"the exported gate does not add one constant: {delta.flatten().tolist()}")
    return int(delta.flatten()[0])


def measure_gate(test: str, module: ModuleType | Mapping[str, Any]) -> GateTable:
    """The condition's branch per (exporter, flag) at a DeepStack layer, read back from each artefact.

    A condition that raises in plain Python (``self._skip_deepstack_export`` unset) is the file's
    doing: its cells say ``raises <error>``. An exporter that fails on the gate is ours to explain:
    its cell is ``None``, with the reason in ``errors``.
    """
    import time

    import torch

    condition = compile_condition(test, module)
    gate = _gate_class()
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    cells: dict[Cell, str | None] = {}
    errors: dict[Cell, str] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for flag_label, flag in FLAGS.items():
            try:
                bool(condition(gate(condition, flag), DEEPSTACK_LAYER))
            except Exception as exc:
                for exporter in EXPORTERS:
                    cells[(exporter, flag_label)] = f"raises {type(exc).__name__}: {exc}"
                continue
            for exporter in EXPORTERS:
                cell = (exporter, flag_label)
                try:
                    added = added_by(run_under(gate(condition, flag), exporter, x, Path(folder)), x)
                except Exception as exc:
                    cells[cell] = None
                    errors[cell] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
                    continue
                cells[cell] = {1: RUN, 0: SKIP}.get(added, f"adds {added}")
    return GateTable(test, cells, errors, round(time.perf_counter() - started, 2))


def gate_table(
    test: str,
    module: ModuleType | Mapping[str, Any],
    cache: ArtifactCache | None = None,
    source: Path | None = None,
) -> GateTable:
    """``measure_gate`` through the cache: built once per (condition text, library versions, ``source``,
    our code). ``source`` is the file ``module`` was imported from, required with a cache: the
    condition runs with that file's globals, so a fork that edits a helper it calls gets a new table.

    A table with unmeasured cells is ours to explain, not a fact about the condition: it is returned
    but not cached, so the next session measures again.
    """
    if cache is None:
        return measure_gate(test, module)
    if source is None:
        raise ValueError("gate_table: a cached table needs the source file its module was imported from")
    parts = {
        "kind": "deepstack-gate",
        "condition": test,
        "libraries": json.dumps(library_versions(EXPORT_LIBRARIES), sort_keys=True),
        "source": file_digest(source),
        "recipe": code_digest("judge.gate", "source.diff"),
    }

    def build(path: Path) -> None:
        table = measure_gate(test, module)
        if table.errors:  # cells an exporter could not measure: returned, never cached
            raise Unpublished(table)
        path.write_text(table.to_json(), encoding="utf-8")

    try:
        return GateTable.from_json(cache.get_or_create(parts, "gate.json", build).read_text(encoding="utf-8"))
    except Unpublished as incomplete:
        table: GateTable = incomplete.value
        return table


# Judging a file's table against the report's words and the report's own condition.


def words_table(
    runs: Callable[[str, str], bool], exporters: tuple[str, ...], flags: tuple[str, ...]
) -> dict[Cell, str]:
    """What the report's words say per (exporter, flag): ``runs(exporter, flag)`` -> run or skip."""
    return {(e, f): RUN if runs(e, f) else SKIP for e in exporters for f in flags}


@dataclass(frozen=True)
class GateVerdict:
    """A file's gate against the report's words, cell by cell.

    ``problems``: cells where the file does what neither the words nor the report's condition do
    (the file's fault). ``reported``/``measured``: the measured cells, for holds-or-erratum on
    values (a cell where the file does what the report's condition does, against the words, is the
    report's erratum). ``unmeasured``: cells an exporter could not produce, with why.
    """

    problems: list[str]
    reported: dict[Cell, str]
    measured: dict[Cell, str]
    unmeasured: list[str]

    def detail(self) -> str:
        """The measured cells in words, then those that could not be measured."""
        text = describe_cells(self.measured)
        return text + (f" | not measured: {'; '.join(self.unmeasured)}" if self.unmeasured else "")


def _does(value: str) -> str:
    return {RUN: "runs", SKIP: "skips"}.get(value, value)


def judge_gate(table: GateTable, reference: GateTable, words: Mapping[Cell, str], who: str) -> GateVerdict:
    """Compare ``table`` with ``words`` on the cells ``words`` names; see ``GateVerdict``."""
    problems: list[str] = []
    reported: dict[Cell, str] = {}
    measured: dict[Cell, str] = {}
    unmeasured: list[str] = []
    for cell, said in words.items():
        value, expected = table.cells.get(cell), reference.cells.get(cell)
        exporter, flag = cell
        if value is None:
            unmeasured.append(f"{exporter} flag {flag}: {table.errors.get(cell, 'not measured')}")
            continue
        if value != said and value != expected:
            problems.append(
                f"under {exporter} with the flag {flag}, {who} {_does(value)} DeepStack "
                f"(the report says it {_does(said)}; the report's condition {_does(str(expected))})"
            )
        reported[cell], measured[cell] = said, value
    return GateVerdict(problems, reported, measured, unmeasured)


def describe_cells(cells: Mapping[Cell, str]) -> str:
    """``flag unset, False: run under eager, torch.compile; skip under torch.jit.trace | flag True: ...``;
    flags whose rows agree share one part, and a value every column gives says "under all N"."""
    exporters = list(dict.fromkeys(e for e, _ in cells))
    rows: dict[str, list[str]] = {}
    for flag in dict.fromkeys(f for _, f in cells):
        by_value: dict[str, list[str]] = {}
        for (exporter, f), value in cells.items():
            if f == flag:
                by_value.setdefault(value, []).append(exporter)
        text = "; ".join(
            f"{value} under {f'all {len(where)}' if where == exporters else ', '.join(where)}"
            for value, where in by_value.items()
        )
        rows.setdefault(text, []).append(flag)
    return " | ".join(f"flag {', '.join(flags)}: {text}" for text, flags in rows.items())
