"""The export recipes of ``qwen3vl-export`` on your file: one grid-free file must serve every sweep grid.

The sweep (``pytest_qwen3vl.model.grids.SWEEP``) is used whatever ``--qwen3vl-grid`` says: the run's
grid is where the file is traced, the sweep is what it must then serve, on each ``--qwen3vl-runtime``
(default ONNX Runtime) at the tolerance of the precision that runs there. Each file comes from the
session-wide ``qwen3vl_export`` fixture, exported once per run.
"""

from __future__ import annotations

import pytest

from pytest_qwen3vl.errors import ExportFailed, RecipeUnsupported
from pytest_qwen3vl.judge.finding import served_line

pytestmark = pytest.mark.qwen3vl_export


def grid_free_sweep(qwen3vl_export, which, grid, runtime, exporter="torchscript"):
    """The grid-free file of ``which`` traced at ``grid``, checked on every sweep grid against golden on ``runtime``."""
    try:
        path = qwen3vl_export.recipe(which, "grid-free", grid, exporter=exporter)
    except RecipeUnsupported as exc:  # our recipe's gap, not a verdict on the file
        pytest.skip(f"not run: {exc.summary}")
    except ExportFailed as exc:
        pytest.fail(f"the grid-free recipe ({exporter}) does not export the {which} file: {exc.summary}", pytrace=False)
    return qwen3vl_export.sweep(path, runtime=runtime)


@pytest.mark.qwen3vl_claim("grid-free-export")
def test_one_grid_free_file_serves_every_sweep_grid(
    qwen3vl_export, qwen3vl_grid, qwen3vl_runtime, qwen3vl_runtimes, qwen3vl_record
):
    runtime = qwen3vl_runtimes(qwen3vl_runtime)
    served, line = served_line(grid_free_sweep(qwen3vl_export, "modified", qwen3vl_grid, runtime))
    assert served, f"the grid-free file of the modified model traced at {qwen3vl_grid.id} on {runtime.label} {line}"
    qwen3vl_record.holds(f"one file traced at {qwen3vl_grid.id} on {runtime.label} {line}")


@pytest.mark.qwen3vl_claim("grid-free-dynamo")
def test_grid_free_recipe_exports_with_dynamo_and_serves_every_sweep_grid(
    qwen3vl_export, qwen3vl_grid, qwen3vl_runtime, qwen3vl_runtimes, qwen3vl_record
):
    runtime = qwen3vl_runtimes(qwen3vl_runtime)
    served, line = served_line(grid_free_sweep(qwen3vl_export, "modified", qwen3vl_grid, runtime, exporter="dynamo"))
    assert served, f"the dynamo grid-free file traced at {qwen3vl_grid.id} on {runtime.label} {line}"
    qwen3vl_record.holds(f"exports (no data-dependent guard left); one file on {runtime.label} {line}")
