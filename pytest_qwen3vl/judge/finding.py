"""One shape for what a file did on one grid, and one place that words it.

Every row about serving (a recipe's file on the sweep, a user's file under ``--qwen3vl-onnx``) is
made of ``Finding`` records and worded by ``served_line``: a grid is *served* when the runtime ran
it and every output is within the tolerance, *refused* when the runtime raised (its own error), and
*wrong* when it ran and answered outside the tolerance, the worse finding, so it is listed first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_qwen3vl.judge.tolerance import OutputParity, Tolerance
from pytest_qwen3vl.model.grids import Grid

SERVED, REFUSED, WRONG = "served", "refused", "wrong"
_COUNTS = {2: "two", 3: "three"}  # image grids in one call, in words


@dataclass(frozen=True)
class Finding:
    """One file on one grid on one runtime (``runtime`` names it and its precision, ``onnxruntime:fp32``)."""

    file: str
    runtime: str
    grid: Grid
    tolerance: Tolerance
    error: str | None = None  # the runtime's own refusal
    outputs: tuple[OutputParity, ...] = ()
    problems: tuple[str, ...] = ()  # outputs that could not be compared (shape, absent, extra)

    @property
    def status(self) -> str:
        if self.error is not None:
            return REFUSED
        if self.problems or not all(o.within(self.tolerance) for o in self.outputs):
            return WRONG
        return SERVED

    @property
    def served(self) -> bool:
        return self.status == SERVED

    def reason(self) -> str:
        """Why the grid is not served, in a few words; empty when it is."""
        if self.error is not None:
            return self.error
        if self.problems:
            return self.problems[0]
        worst = [o for o in self.outputs if not o.within(self.tolerance)]
        return max(worst, key=lambda o: o.rel_l2).reason() if worst else ""

    def worst_rel_l2(self) -> float:
        return max((o.rel_l2 for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "runtime": self.runtime, "grid": self.grid.text,
                "tolerance": asdict(self.tolerance), "error": self.error,
                "outputs": [asdict(o) for o in self.outputs], "problems": list(self.problems)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(data["file"], data["runtime"], Grid.parse(data["grid"]), Tolerance(**data["tolerance"]),
                   data["error"], tuple(OutputParity(**o) for o in data["outputs"]), tuple(data["problems"]))


def mixes_grids(grid: Grid) -> int:
    """How many different image grids one call of ``grid`` holds (1: one image, or images alike)."""
    return len(set(grid.images))


def served_line(findings: Sequence[Finding], *, graph: bool = False) -> tuple[bool, str]:
    """``serves 7 of 9 grids; wrong on 2x24x12 (pooled_embeds relative L2 0.96); refuses 1x20x20 (ONNX
    Runtime: ...)`` and whether every grid is served. A file that runs every one-grid call but refuses
    calls holding images of different grids is told so apart (``refuses 1x24x24+1x16x32 (two grids in
    one call)``): it serves each image alone. ``graph``: the findings are the graph's (the file against
    golden holding its own weights), so a file wrong nowhere it runs has its graph right there."""
    wrong = [f for f in findings if f.status == WRONG]
    refused = [f for f in findings if f.status == REFUSED]
    single = [f for f in findings if mixes_grids(f.grid) == 1]
    mixed = ([f for f in refused if mixes_grids(f.grid) > 1]
             if single and all(f.status != REFUSED for f in single) else [])
    refused = [f for f in refused if f not in mixed]
    served = len(findings) - len(wrong) - len(refused) - len(mixed)
    line = f"serves {served} of {len(findings)} grid{'s' if len(findings) != 1 else ''}"
    if wrong:
        line += "; wrong on " + ", ".join(f"{f.grid.id} ({f.reason()})" for f in wrong)
    if len(findings) > 1 and len(refused) == len(findings) and len({f.reason() for f in refused}) == 1:
        line += f"; refuses every grid ({refused[0].reason()})"  # a file that does not load, said once
    elif refused:
        line += "; refuses " + ", ".join(f"{f.grid.id} ({f.reason()})" for f in refused)
    if mixed:
        line += "; refuses " + ", ".join(f"{f.grid.id} ({_COUNTS.get(mixes_grids(f.grid), mixes_grids(f.grid))} "
                                        "grids in one call)" for f in mixed)
    if served and not wrong and not refused and not mixed and findings:
        line += f" (worst relative L2 {max(f.worst_rel_l2() for f in findings):.2g})"
    elif graph and served and not wrong:
        line += "; the graph is right on every grid it runs"
    return bool(findings) and not (wrong or refused or mixed), line  # no grid judged proves nothing

