"""A user's own ONNX vision encoder judged against golden PyTorch with the same weights.

What the file is (interface, weight type) was read once at start-up (``onnxfile/interface.py``).
How it computes is measured per grid and runtime by ``ArtefactCheck`` through the sweep's ``FileRuns``
(one session, each grid run once), at the tolerance of its weight type or of the runtime's arithmetic,
whichever is looser. DeepStack outputs are matched to golden's features by value, and where a grid
goes wrong the first module whose output drifts is located (``judge/locate.py``, on ONNX Runtime: the
reference runtime, which exposes intermediate outputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_qwen3vl.judge.sweep import FileRuns, deepstack_values
from pytest_qwen3vl.judge.tolerance import TOLERANCES, row_for
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, OnnxRuntimeCPU

if TYPE_CHECKING:
    from pytest_qwen3vl.judge.finding import Finding
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.judge.locate import Location
    from pytest_qwen3vl.onnxfile.interface import FileFacts
    from pytest_qwen3vl.runtimes.base import Runtime

# An output "is" a golden tensor only above this cosine; golden's tensors are nearly orthogonal to
# each other (|cos| <= 0.01 measured), matched ones are above 0.9998 even for int8 files.
MATCH_COSINE = 0.9


@dataclass(frozen=True)
class DeepStackMatch:
    """A DeepStack output of the file and the golden feature it equals (None: none above MATCH_COSINE)."""

    output: str
    position: int
    matched: int | None
    cosine: float


class ArtefactCheck:
    """One ``--qwen3vl-onnx`` file on one runtime (default ONNX Runtime's CPU) against golden: findings
    and locations per grid, computed once each."""

    def __init__(self, facts: FileFacts, golden: GoldenRuns, overrides: Mapping[str, float] | None = None,
                 runtime: Runtime | None = None) -> None:
        self.facts = facts
        self.path = facts.path
        self.interface = facts.interface
        self.weights = facts.weights
        self.golden = golden
        self.runtime = runtime or OnnxRuntimeCPU(config=LOW_MEMORY)
        self.row = row_for(self.weights.name, self.runtime.arithmetic)
        self.tolerance = TOLERANCES[self.row].replace(overrides or {})
        self.overridden = bool(overrides)
        self.runs = FileRuns(facts, self.runtime, golden, self.tolerance)

    @property
    def runtime_text(self) -> str:
        """The runtime as rows name it: its label, and what it did to the file first where it did anything."""
        session = self.runs.session()
        note = f" ({session.note})" if session is not None and session.note else ""
        return f"{self.runtime.label}{note}"

    @property
    def tolerance_text(self) -> str:
        if self.overridden:
            origin = "overridden"
        elif self.row != self.weights.name:
            origin = f"{self.row} tolerance ({self.weights.name} weights, {self.runtime.label} arithmetic)"
        else:
            origin = f"{self.row} tolerance"
        return f"{origin}: {self.tolerance.text()}"

    def run(self, grid: Grid) -> Finding:
        return self.runs.finding(grid)

    def deepstack_matches(self, grid: Grid) -> list[DeepStackMatch]:
        """Each DeepStack output matched by cosine to golden's DeepStack features (and pooled)."""
        from pytest_qwen3vl.metrics import cosine

        finding, values = self.runs.run(grid)
        if finding.error is not None:
            return []
        gold = self.golden.outputs(grid)
        matches = []
        for position, (name, value) in enumerate(deepstack_values(self.interface, values)):
            best: tuple[int | None, float] = (None, 0.0)
            for index, expected in enumerate(gold):
                if tuple(expected.shape) == tuple(value.shape):
                    c = cosine(value, expected)
                    if c > best[1]:
                        best = (index - 1 if index else -1, c)
            matched = best[0] if best[1] >= MATCH_COSINE else None
            matches.append(DeepStackMatch(name, position, matched, best[1]))
        return matches

    def locate(self, grid: Grid) -> Location:
        """Where ``grid`` goes wrong: the first module output outside the tolerance's relative L2."""
        from pytest_qwen3vl.judge.locate import locate

        self.runs.release()
        return locate(self.path, self.runs.feeds(grid), self.golden.probes(grid), grid, self.tolerance.rel_l2)
