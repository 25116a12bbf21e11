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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import ExportFailed, RecipeUnsupported, choose
from pytest_qwen3vl.export.builder import (
    DEFAULT_OPSET,
    EXPORTER_NAMES,
    ExportResult,
    export_mode,
    export_vision,
    traced_deepstack_count,
)
from pytest_qwen3vl.export.equivalence import pytorch_sweep
from pytest_qwen3vl.model.grids import DEFAULT_GRID, SWEEP, Grid
from pytest_qwen3vl.model.inputs import trace_inputs
from pytest_qwen3vl.onnxfile.names import RECIPE_DEEPSTACK_PREFIX

if TYPE_CHECKING:
    import torch

LAYOUTS = ("split", "stacked")
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

    chosen = choose("recipe", recipe, RECIPE_NAMES)
    choose("layout", layout, LAYOUTS)
    choose("exporter", exporter, EXPORTER_NAMES)
    spec = RECIPES[chosen]
    if spec.grid_free:
        _require_own_forward(model, grid, seed)
    inputs = trace_inputs(model, grid, seed)
    with grid_free(model) if spec.grid_free else contextlib.nullcontext():
        if spec.keeps_deepstack and exporter == "torchscript":
            _require_traced_deepstack(model, inputs[0])
        result = export_vision(
            model, *inputs, path, wrapper=wrapper_for(spec, layout), exporter=exporter, opset=opset,
            deepstack_prefix=RECIPE_DEEPSTACK_PREFIX,
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
