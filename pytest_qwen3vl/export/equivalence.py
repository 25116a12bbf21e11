"""The grid-free replacements against golden's own forward, in PyTorch: does the maths a grid-free
recipe traces reproduce the model's? A recipe refuses a model whose own forward they do not reproduce.

This is not the question of which grids a file serves (``judge/sweep.py``): no file is involved.
torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import RecipeUnsupported
from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import torch

# PyTorch under the replacements against golden's own forward: relative L2 per output. Measured on the
# tiny config over the sweep: at most 3.5e-7 idle and 2.2e-6 once under load (eager attention against
# golden's default sdpa, thread counts differ); a wrong replacement is off by more than 0.1.
PYTORCH_REL_L2 = 1e-5


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
    from pytest_qwen3vl.export.wrappers import AllOutputsWrapper
    from pytest_qwen3vl.metrics import parity
    from pytest_qwen3vl.model.inputs import trace_inputs

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
