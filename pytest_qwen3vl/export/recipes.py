"""Export recipes: what ``qwen3vl-export`` writes, and the sweep checks that say which grids a file serves.

- ``report``: the report's builder export (``pooled_embeds`` only, ``_skip_deepstack_export`` set).
  The trace bakes the grid into the graph, so the file serves the grid it was traced at.
- ``grid-free``: the same outputs, traced under ``grid_free`` (export/gridfree.py), which keeps
  the grid symbolic: one file serves every grid. The replacements stand in for the model's position
  and attention code, so a model whose own eager forward they do not reproduce (a fork that changed
  those functions) is refused with ``RecipeUnsupported`` rather than exported as other maths.
- ``deepstack``: grid-free, and the model traced as it is, so golden's DeepStack tensors become
  outputs: ``deepstack_features_0..D-1`` (layout "split") or one [D, N, H] ``deepstack_features``
  (layout "stacked"). A file whose DeepStack condition skips under ``torch.jit.trace`` (the
  report's modified file) has nothing to keep: the export is refused with that reason.

torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ExportFailed, RecipeUnsupported
from pytest_qwen3vl.export.builder import (
    DEFAULT_OPSET,
    EXPORTER_NAMES,
    POOLED_OUTPUT,
    STACKED_OUTPUT,
    ExportResult,
    export_mode,
    export_vision,
    traced_deepstack_count,
)
from pytest_qwen3vl.export.runtime import PARITY_ATOL, PARITY_RTOL
from pytest_qwen3vl.model.grids import SWEEP, Grid

if TYPE_CHECKING:
    import torch

DEFAULT_GRID = Grid.parse("1,24,24")
LAYOUTS = ("split", "stacked")
DEEPSTACK_PREFIX = "deepstack_features_"
# PyTorch under the replacements against golden's own forward: relative L2 per output. Measured on the
# tiny config over the sweep: at most 3.5e-7 (eager attention against golden's default sdpa).
PYTORCH_REL_L2 = 1e-6
# The replacements against the model's OWN eager forward before a grid-free export, on the trace grid and
# these sweep grids (wide, and two images of different grids): a file whose own positions or attention
# differ from what the replacements compute would otherwise be exported as other maths. Looser than
# PYTORCH_REL_L2 for a real-size model's rounding; a replaced function that differs is off by far more
# (H and W swapped in the position table: 1 on 1x16x40).
OWN_FORWARD_REL_L2 = 1e-5
OWN_FORWARD_GRIDS = tuple(grid for grid in SWEEP if grid.id in ("1x16x40", "1x24x24+1x16x32"))


@dataclass(frozen=True)
class Recipe:
    """One way to export the vision encoder: how it is traced and what the file serves."""

    name: str
    grid_free: bool
    keeps_deepstack: bool
    serves: str


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("report", grid_free=False, keeps_deepstack=False, serves="only the grid it was traced at"),
        Recipe("grid-free", grid_free=True, keeps_deepstack=False, serves="every grid"),
        Recipe("deepstack", grid_free=True, keeps_deepstack=True, serves="every grid"),
    )
}
RECIPE_NAMES = tuple(RECIPES)


def wrapper_for(recipe: Recipe, layout: str) -> str:
    """The builder wrapper a recipe exports through."""
    if not recipe.keeps_deepstack:
        return "pooled"
    return "stacked" if layout == "stacked" else "all"


def export_recipe(
    model: torch.nn.Module,
    recipe: str,
    path: str | os.PathLike[str],
    *,
    grid: Grid = DEFAULT_GRID,
    opset: int = DEFAULT_OPSET,
    layout: str = "split",
    exporter: str = "torchscript",
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` with ``recipe``, traced on seeded inputs of ``grid``; raises ``ExportFailed``.

    ``layout`` applies to "deepstack" only. The model is left as it was found.
    """
    from pytest_qwen3vl.export.gridfree import grid_free

    chosen = _check_choice("recipe", recipe, RECIPE_NAMES)
    _check_choice("layout", layout, LAYOUTS)
    _check_choice("exporter", exporter, EXPORTER_NAMES)
    spec = RECIPES[chosen]
    if spec.grid_free:
        _require_own_forward(model, grid, seed)
    inputs = trace_inputs(model, grid, seed)
    with grid_free(model) if spec.grid_free else contextlib.nullcontext():
        if spec.keeps_deepstack and exporter == "torchscript":
            _require_traced_deepstack(model, inputs[0])
        result = export_vision(
            model, *inputs, path, wrapper=wrapper_for(spec, layout), exporter=exporter, opset=opset,
            deepstack_prefix=DEEPSTACK_PREFIX,
        )
    label(result.path, spec, grid)
    return dataclasses.replace(result, recipe=chosen)


def serves(recipe: Recipe, grid: Grid) -> str:
    """What a file of ``recipe`` traced at ``grid`` serves, in words."""
    return f"{recipe.serves} ({grid.id})" if not recipe.grid_free else recipe.serves


def label(path: Path, recipe: Recipe, grid: Grid) -> None:
    """Write the recipe, the trace grid and what the file serves into its metadata, atomically."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for key, value in (("qwen3vl.recipe", recipe.name), ("qwen3vl.trace_grid", grid.text),
                       ("qwen3vl.serves", serves(recipe, grid))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    staging = path.with_name(f".{path.name}.label")
    onnx.save_model(model, str(staging))
    os.replace(staging, path)


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def trace_inputs(model: torch.nn.Module, grid: Grid, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``pixel_values`` and ``grid_thw`` for ``grid``, sized from the model's own config."""
    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.model.inputs import make_inputs

    config = model.config
    geometry = {key: getattr(config, key) for key in ("in_channels", "temporal_patch_size", "patch_size")}
    return make_inputs(grid, ModelSpec("trace", geometry), seed).args


def _require_own_forward(model: torch.nn.Module, grid: Grid, seed: int) -> None:
    """Refuse a grid-free export of a model whose own eager forward the replacements do not reproduce
    (within ``OWN_FORWARD_REL_L2``) on ``grid`` and ``OWN_FORWARD_GRIDS``: the file would hold other maths."""
    for check_grid in dict.fromkeys((grid, *OWN_FORWARD_GRIDS)):
        try:
            result = pytorch_sweep(model, model, (check_grid,), seed, rel_l2=OWN_FORWARD_REL_L2)
        except RecipeUnsupported:
            raise
        except Exception as exc:  # the file's own forward on a valid grid; its error is the finding
            raise RecipeUnsupported(
                f"the file's own forward raises on {check_grid.id} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}): the recipe cannot check it exports this file's maths"
            ) from exc
        if result.wrong:
            raise RecipeUnsupported(
                f"the file's own forward differs from the grid-free replacement on {check_grid.id} "
                f"({result.wrong[0].detail}): the recipe would export other maths than this file's"
            )


def _require_traced_deepstack(model: torch.nn.Module, pixel_values: torch.Tensor) -> None:
    """Refuse a DeepStack export of a model that emits no DeepStack tensors under ``torch.jit.trace``."""
    expected = len(model.config.deepstack_visual_indexes)
    with export_mode(model, skip_deepstack=None):
        traced = traced_deepstack_count(model, pixel_values)
    if traced != expected:
        raise ExportFailed(
            "torchscript",
            f"the model emits {traced} of {expected} DeepStack tensors under torch.jit.trace: its DeepStack "
            "condition skips while tracing (torch.jit.is_tracing()), so there is nothing to keep; "
            "export the golden file instead",
        )


# ---------------------------------------------------------------------------------------------------
# Which grids a file or a replacement serves


@dataclass(frozen=True)
class GridCheck:
    """One grid of a sweep: whether the candidate reproduced golden there, and the figure or failure."""

    grid: Grid
    ok: bool
    detail: str


@dataclass(frozen=True)
class SweepResult:
    """A candidate's checks over a list of grids."""

    checks: tuple[GridCheck, ...]

    @property
    def wrong(self) -> list[GridCheck]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> str:
        return json.dumps([[check.grid.text, check.ok, check.detail] for check in self.checks])

    @classmethod
    def from_json(cls, text: str) -> SweepResult:
        return cls(tuple(GridCheck(Grid.parse(grid), bool(ok), str(detail)) for grid, ok, detail in json.loads(text)))

    def line(self) -> str:
        """``serves 9 of 9 grids`` or ``serves 5 of 9 grids; wrong on 1x16x40 (...), ...``."""
        served = len(self.checks) - len(self.wrong)
        text = f"serves {served} of {len(self.checks)} grids"
        if self.wrong:
            text += "; wrong on " + ", ".join(f"{check.grid.id} ({check.detail})" for check in self.wrong)
        return text


def golden_outputs(golden: torch.nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """Golden's eager forward as users run it: the pooled tensor, then each DeepStack tensor."""
    import torch

    from pytest_qwen3vl.export.wrappers import AllOutputsWrapper

    with torch.no_grad():
        return list(AllOutputsWrapper(golden)(*inputs))


def pytorch_sweep(
    model: torch.nn.Module,
    golden: torch.nn.Module,
    grids: Sequence[Grid],
    seed: int,
    replaced: Callable[[torch.nn.Module], contextlib.AbstractContextManager[Any]] | None = None,
    rel_l2: float = PYTORCH_REL_L2,
) -> SweepResult:
    """``model``'s forward under ``replaced`` (default: ``grid_free``), eager attention as exported,
    against golden's forward on each grid: every output within ``rel_l2`` relative L2. A model the
    replacements do not know raises ``RecipeUnsupported``: that is no grid's fault."""
    import torch

    from pytest_qwen3vl.export.builder import eager_attention
    from pytest_qwen3vl.export.gridfree import grid_free
    from pytest_qwen3vl.export.runtime import parity
    from pytest_qwen3vl.export.wrappers import AllOutputsWrapper

    checks = []
    for grid in grids:
        inputs = trace_inputs(model, grid, seed)
        expected = golden_outputs(golden, inputs)
        try:
            with torch.no_grad(), eager_attention(model), (replaced or grid_free)(model):
                actual = list(AllOutputsWrapper(model)(*inputs))
        except RecipeUnsupported:
            raise
        except Exception as exc:  # a wrong replacement may raise anything; the grid is what it is wrong on
            checks.append(GridCheck(grid, False, f"raises {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"))
            continue
        if len(actual) != len(expected):
            checks.append(GridCheck(grid, False, f"{len(actual)} outputs, golden {len(expected)}"))
            continue
        if any(a.shape != e.shape for a, e in zip(actual, expected, strict=True)):
            checks.append(GridCheck(grid, False, f"shape {tuple(actual[0].shape)}, golden {tuple(expected[0].shape)}"))
            continue
        worst = max(parity(a, e).rel_l2 for a, e in zip(actual, expected, strict=True))
        checks.append(GridCheck(grid, worst <= rel_l2, f"relative L2 {worst:.2g}"))
    return SweepResult(tuple(checks))


def expected_output(name: str, golden: list[Any]) -> Any:
    """Golden's tensor for an output of a recipe's file, by its name; None for a name no recipe makes."""
    import torch

    if name == POOLED_OUTPUT:
        return golden[0]
    if name == STACKED_OUTPUT:
        return torch.stack(golden[1:])
    for prefix in (DEEPSTACK_PREFIX, "deepstack_"):
        index = name.removeprefix(prefix)
        if index != name and index.isdigit() and int(index) + 1 < len(golden):
            return golden[int(index) + 1]
    return None


def onnx_sweep(
    session: Any,
    golden: torch.nn.Module,
    grids: Sequence[Grid],
    seed: int,
    *,
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> SweepResult:
    """An ONNX Runtime session of a recipe's file against golden's forward on each grid.

    Every output is compared with golden's tensor of the same name, elementwise as ``numpy.allclose``;
    a grid on which ONNX Runtime raises is wrong, with the node it failed at.
    """
    import numpy as np

    from pytest_qwen3vl.export.runtime import parity, run_outputs, runtime_failure

    checks = []
    for grid in grids:
        inputs = trace_inputs(golden, grid, seed)
        reference = golden_outputs(golden, inputs)
        try:
            outputs = run_outputs(session, *inputs)
        except Exception as exc:  # onnxruntime raises its own exception classes
            checks.append(GridCheck(grid, False, f"ONNX Runtime fails at {runtime_failure(exc)}"))
            continue
        problems, worst = [], 0.0
        for name, actual in outputs.items():
            expected = expected_output(name, reference)
            if expected is None or actual.shape != tuple(expected.shape):
                problems.append(f"{name} {actual.shape}, golden {None if expected is None else tuple(expected.shape)}")
                continue
            worst = max(worst, parity(actual, expected).rel_l2)
            if not np.allclose(actual, expected.numpy(), rtol=rtol, atol=atol):
                problems.append(f"{name} relative L2 {parity(actual, expected).rel_l2:.2g}")
        checks.append(GridCheck(grid, not problems, "; ".join(problems) or f"relative L2 {worst:.2g}"))
    return SweepResult(tuple(checks))

