"""Each vision model's forward on each eager grid, run once per process for every claim that reads it.

output-contract, runtime-equivalence and vision-rope read the same thing: the model's forward on a
grid with the export flag unset, and (vision-rope) the first block's attention call. Run apart, that
was one forward per claim, model and grid: 56 of the 92 eager forwards of a warm run on the sweep,
where 18 do. The outputs and that one recorded call are kept (about 140 MB per model for the sweep
at the 4B's dimensions); vision-data-flow records every block and runs its own forward rather than
keep them all (0.9 GB per model at 4B).

torch is imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.model.build import deepstack_export_flag
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.references import Call, record_calls

if TYPE_CHECKING:
    import torch

    from pytest_qwen3vl.model.inputs import VisionInputs

# The submodules whose calls are kept: what vision-rope compares with its float64 attention.
RECORDED = ("blocks.0.attn",)


@dataclass(frozen=True)
class EagerRun:
    """One forward of a vision model on one grid, the export flag unset: what it returned, and the
    calls of the ``RECORDED`` submodules in the order they finished."""

    outputs: Any
    calls: tuple[Call, ...]


class EagerRuns:
    """``runs(which, grid) -> EagerRun`` for the models by name ("golden", "modified") on the inputs
    given per grid, each forward run on first use and kept. A forward that raises is not kept: the
    next claim that asks sees it raise too."""

    def __init__(self, models: Mapping[str, torch.nn.Module], inputs: Sequence[VisionInputs]) -> None:
        self._models = models  # not copied: a model may be made on first use (the modified one)
        self._inputs = {x.grid: x for x in inputs}
        self._runs: dict[tuple[str, Grid], EagerRun] = {}

    def __call__(self, which: str, grid: Grid) -> EagerRun:
        if which not in self._models:
            raise ValueError(f"which must be one of {', '.join(self._models)}, not {which!r}")
        if grid not in self._inputs:
            raise ValueError(f"{grid.id} is not an eager grid of this run ({', '.join(g.id for g in self._inputs)})")
        if (which, grid) not in self._runs:
            import torch

            model = self._models[which]
            with record_calls(model, RECORDED) as calls, torch.inference_mode(), deepstack_export_flag(model, None):
                outputs = model(*self._inputs[grid].args)
            self._runs[which, grid] = EagerRun(outputs, tuple(calls))
        return self._runs[which, grid]
