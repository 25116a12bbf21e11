"""What ``torch.jit.trace`` does to the vision model: where it bakes the grid in, and which DeepStack
mergers run while it traces.

Tracing records tensor operations only; every Python value computed from ``grid_thw`` (``.item()``,
``.tolist()``, iterating over a tensor) becomes a constant, and torch says so with a TracerWarning
at that line. Those places are why an export is valid only for the grid it was traced at.

torch is imported inside the functions.
"""

from __future__ import annotations

import ast
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.export.builder import export_mode, make_wrapper, skip_flag_for
from pytest_qwen3vl.model.build import deepstack_export_flag

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, order=True)
class TraceHazard:
    """One place where tracing turned a value into a constant, with how often it fired there.

    Sorted by file and line. Compare golden and modified by ``key`` (function, message): line
    numbers shift when a file gains lines, the hazard does not.
    """

    file: str  # basename
    line: int
    function: str  # qualified, e.g. "Qwen3VLVisionModel.rot_pos_emb"
    message: str  # the warning's first line
    path: str = field(compare=False)
    count: int = field(compare=False, default=1)

    @property
    def key(self) -> tuple[str, str]:
        return self.function, self.message


def trace_hazards(
    model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, *, wrapper: str = "pooled"
) -> list[TraceHazard]:
    """Trace the model as ``export_vision`` would (same wrapper, attention and flag) and list the
    TracerWarnings by place, each place once.
    """
    import torch

    module = make_wrapper(model, wrapper)
    with (
        export_mode(model, skip_deepstack=skip_flag_for(wrapper)),
        warnings.catch_warnings(record=True) as caught,
        torch.no_grad(),
    ):
        warnings.simplefilter("always")
        torch.jit.trace(module, (pixel_values, grid_thw), check_trace=False)
    places: dict[tuple[str, int, str], int] = {}
    for item in caught:
        if issubclass(item.category, torch.jit.TracerWarning):
            lines = str(item.message).strip().splitlines()
            place = (item.filename, item.lineno, lines[0] if lines else "")
            places[place] = places.get(place, 0) + 1
    return sorted(
        TraceHazard(Path(path).name, line, enclosing_function(path, line), message, path, count)
        for (path, line, message), count in places.items()
    )


def enclosing_function(path: str, line: int) -> str:
    """Qualified name of the innermost function around ``line`` of a Python file ("<module>" if none)."""
    best = "<module>"
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        return best
    for start, end, name in _functions(path, stamp):
        if start <= line <= end:
            best = name  # spans come outer before inner, so the last match is the innermost
    return best


@functools.lru_cache(maxsize=32)
def _functions(path: str, stamp: int) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, qualified name) of every function in a file, outer before inner.

    ``stamp`` (the file's mtime) is part of the cache key, so a rewritten file is parsed again.
    """
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ()
    spans: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                spans.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(spans)


def count_deepstack_calls(
    model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, *, trace: bool, flag: bool | None
) -> list[int]:
    """How often each DeepStack merger ran in one eager forward or one ``torch.jit.trace``.

    ``flag`` sets ``_skip_deepstack_export`` for the run (None: the attribute is absent). Forward
    hooks count Python calls, so a merger that runs while tracing counts even where the exporter
    would later prune its unused output. The trace goes through the pooled wrapper.
    """
    import torch

    mergers = list(model.deepstack_merger_list)
    counts = [0] * len(mergers)

    def counter(index: int) -> object:
        def hook(*_: object) -> None:
            counts[index] += 1

        return hook

    handles = [merger.register_forward_hook(counter(i)) for i, merger in enumerate(mergers)]
    try:
        with deepstack_export_flag(model, flag), torch.no_grad():
            if trace:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.jit.trace(make_wrapper(model, "pooled"), (pixel_values, grid_thw), check_trace=False)
            else:
                model(pixel_values, grid_thw)
    finally:
        for handle in handles:
            handle.remove()
    return counts
