"""A user's own ONNX vision encoder judged against golden PyTorch with the same weights.

What the file is (interface, weight type) was read once at start-up (``onnxfile/interface.py``).
How it computes is measured per grid and runtime by ``ArtefactCheck`` through the sweep's ``FileRuns``
(one session, each grid run once), at the tolerance of its weight type or of the runtime's arithmetic,
whichever is looser. DeepStack outputs are matched to golden's features by value, and where a grid
goes wrong the first module whose output drifts is located (``judge/locate.py``, on ONNX Runtime: the
reference runtime, which exposes intermediate outputs).

Two questions are kept apart: are the file's weights the checkpoint's (``judge/weights.py``), and
does its graph compute golden's function of the weights it holds. The second runs golden with the
file's dequantized weights swapped in, at the tolerance of the arithmetic the file declares; a file
whose every weight equals the checkpoint's is decided by its parity runs, with no extra work.
"""

from __future__ import annotations

import tempfile
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.judge.finding import Finding
from pytest_qwen3vl.judge.golden import GoldenRuns
from pytest_qwen3vl.judge.sweep import FileRuns, compare, deepstack_values
from pytest_qwen3vl.judge.tolerance import TOLERANCES, Tolerance, row_for
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, OnnxRuntimeCPU

if TYPE_CHECKING:
    from pytest_qwen3vl.judge.locate import Location
    from pytest_qwen3vl.judge.pipeline_cost import PipelineCost, WholeModel
    from pytest_qwen3vl.judge.weights import WeightReport
    from pytest_qwen3vl.onnxfile.interface import FileFacts
    from pytest_qwen3vl.runtimes.base import Runtime

# An output "is" a golden tensor only above this cosine; golden's tensors are nearly orthogonal to
# each other (|cos| <= 0.01 measured), matched ones are above 0.9998 even for int8 files.
MATCH_COSINE = 0.9


@dataclass(frozen=True)
class GraphArithmetic:
    """How the graph is judged: the file run for it (a copy with fp32 activations where the format
    allows), the tolerance of the arithmetic it declares, and that in words."""

    path: Path
    tolerance: Tolerance
    text: str


@dataclass(frozen=True)
class Profile:
    """Each module's relative L2 along the tower on one grid: against golden holding the file's own
    weights (the graph) and against the checkpoint's golden (what the user ships; None: not asked),
    with the limit each is judged at."""

    graph: Location
    checkpoint: Location | None
    graph_limit: float
    checkpoint_limit: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data (it travels from an xdist worker in a test report): the grid, the limits, the
        first module out of each, and per module its two values (a relative L2; a string: not that
        module's output; None: not computed)."""
        against = dict(self.checkpoint.probes) if self.checkpoint is not None else {}
        return {
            "grid": self.graph.grid.id, "graph_limit": self.graph_limit, "checkpoint_limit": self.checkpoint_limit,
            "first_graph": self.graph.first_bad,
            "first_checkpoint": self.checkpoint.first_bad if self.checkpoint is not None else None,
            "problem": self.graph.problem, "failure": self.graph.failure,
            "modules": [[name, value, against.get(name)] for name, value in self.graph.probes],
        }


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
                 runtime: Runtime | None = None, reference: ArtefactCheck | None = None) -> None:
        self.facts = facts
        # The same file's check on ONNX Runtime, the reference runtime, where this one is another runtime's:
        # the weights and golden holding them are read there once, not once per runtime.
        self.reference = reference
        self.path = facts.path
        self.interface = facts.interface
        self.weights = facts.weights
        self.golden = golden
        self.runtime = runtime or OnnxRuntimeCPU(config=LOW_MEMORY)
        self.row = row_for(self.weights.name, self.runtime.arithmetic)
        self.tolerance = TOLERANCES[self.row].replace(overrides or {})
        self.overridden = bool(overrides)
        self.runs = FileRuns(facts, self.runtime, golden, self.tolerance)
        self._graph_golden: GoldenRuns | None = None
        self._plain: GoldenRuns | None = None  # golden holding the file's weights, its buffers as they are
        self._copies: tempfile.TemporaryDirectory[str] | None = None  # the fp32-activation copy's folder
        self._values: tempfile.TemporaryDirectory[str] | None = None  # the file's weights that differ, as .npy
        self._costs: dict[Grid, PipelineCost] = {}
        self._profiles: dict[Grid, Profile] = {}

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

    @cached_property
    def weight_report(self) -> WeightReport:
        """The file's weights against the checkpoint's, tensor by tensor (read once, in a child
        process: the file's weights never sit beside golden's here; the values that differ stay on
        disk, in this check's folder, until golden is run with them)."""
        from pytest_qwen3vl.judge.weights import compare_in_child

        if self.reference is not None:
            return self.reference.weight_report
        self._values = tempfile.TemporaryDirectory(prefix="qwen3vl-weights-")
        return compare_in_child(self.path, self.golden.state(), Path(self._values.name))

    @cached_property
    def arithmetic(self) -> GraphArithmetic:
        """fp32 compute (bf16-rounded fp32 weights included) at the fp32 row, fp16 at fp16's;
        ``MatMulNBits`` at accuracy level 4 judged on a copy at level 0 (same weights, fp32
        activations); ``quantize_dynamic``'s int8 activations, which have no fp32 form in the file,
        at the measured int8-activation row."""
        from pytest_qwen3vl.onnxfile.dequantize import fp32_activations_copy, int8_activation_ops
        from pytest_qwen3vl.onnxfile.structure import structure

        ops = int8_activation_ops(structure(self.path))
        if ops == ["MatMulNBits"]:
            self._copies = tempfile.TemporaryDirectory(prefix="qwen3vl-level0-")
            copy = fp32_activations_copy(self.path, Path(self._copies.name))
            return GraphArithmetic(copy, TOLERANCES["fp32"], "MatMulNBits accuracy level 4 judged on a copy at "
                                   "level 0 (fp32 activations), fp32 tolerance")
        if ops:
            return GraphArithmetic(self.path, TOLERANCES["int8-activations"],
                                   f"int8 activations ({', '.join(ops)}), int8-activation tolerance")
        name = row_for(self.weights.name if self.weights.name in ("fp16", "bf16") else "fp32", self.runtime.arithmetic)
        return GraphArithmetic(self.path, TOLERANCES[name], f"{name} compute, {name} tolerance")

    def graph_golden(self, grid: Grid) -> GoldenRuns:
        """Golden holding the file's own weights (golden itself when they are the checkpoint's),
        decided on the first grid asked for and kept. Where the weights were rounded (the model was
        cast before export), its buffers may have been cast too, and the rotary tables computed from
        them folded into the graph: golden's buffers are then rounded alike if that is closer to the
        file on that grid (one more forward, once)."""
        from pytest_qwen3vl.judge.weights import cast_buffers
        from pytest_qwen3vl.metrics import parity

        if self.reference is not None:
            return self.reference.graph_golden(grid)
        if self._graph_golden is not None:
            return self._graph_golden
        report = self.weight_report
        if report.all_equal:
            self._graph_golden = self.golden
            return self.golden
        model, spec, seed = self.golden.model, self.golden.spec, self.golden.seed
        if self._plain is None:  # one object until decided: grids it serves share its swaps
            self._plain = GoldenRuns(model, spec, seed, report.values, report.saved)
        plain = self._plain
        buffers = cast_buffers(report, model)
        if not buffers or self.interface.pooled is None:
            self._graph_golden = plain
            return plain
        finding, values = self.graph_runs.run(grid)
        if finding.error is not None:
            return plain  # nothing to decide on here: the next grid decides
        # read only (ChainMap's typing asks for maps it could write): the values stay on disk until swapped in
        cast = GoldenRuns(model, spec, seed, ChainMap(buffers, report.values), report.saved)  # type: ignore[arg-type]
        got = values[self.interface.pooled.name]
        closer = parity(got, cast.outputs(grid)[0]).rel_l2 < parity(got, plain.outputs(grid)[0]).rel_l2
        self._graph_golden = cast if closer else plain
        return self._graph_golden

    @cached_property
    def graph_runs(self) -> FileRuns:
        """The runs the graph is judged on: the parity runs (always, on a runtime other than the
        reference: what runs there is what is judged), or the fp32-activation copy's."""
        if self.reference is not None:
            return self.runs
        arithmetic = self.arithmetic
        if arithmetic.path == self.path:
            return self.runs
        facts = type(self.facts)(arithmetic.path, self.interface, self.weights, self.facts.initializers)
        return FileRuns(facts, OnnxRuntimeCPU(config=LOW_MEMORY), self.golden, arithmetic.tolerance)

    def graph(self, grid: Grid) -> Finding:
        """The file's outputs on ``grid`` against golden's function of the file's own weights: on the
        reference runtime at the arithmetic the file declares; on another runtime, its run at the
        tolerance of the precision that ran there."""
        if self.weight_report.all_equal:
            return self.run(grid)
        tolerance = self.tolerance if self.reference is not None else self.arithmetic.tolerance
        finding, values = self.graph_runs.run(grid)
        if finding.error is not None:
            return finding
        outputs, problems = compare(self.interface, values, self.graph_golden(grid).outputs(grid))
        return Finding(self.path.name, finding.runtime, grid, tolerance, outputs=outputs, problems=problems)

    def graphs(self, grids: Sequence[Grid]) -> list[Finding]:
        """``graph`` on each of ``grids``, golden holding the file's weights once for all of them (at
        4B each swap moves 1.6 GB each way): the file runs first, then golden's forwards."""
        ran = [] if self.weight_report.all_equal else [g for g in grids if self.graph_runs.run(g)[0].error is None]
        if ran:
            golden = self.graph_golden(ran[0])  # decided on a grid the file runs: the same for every one
            with golden.held():
                for grid in ran:
                    golden.outputs(grid)
        return [self.graph(g) for g in grids]

    def activation_cost(self, grid: Grid) -> float | None:
        """Relative L2 between the file and its fp32-activation copy on ``grid`` (None: no copy)."""
        from pytest_qwen3vl.judge.tolerance import measure

        if self.graph_runs is self.runs or self.run(grid).error is not None:
            return None
        pooled = self.interface.pooled
        assert pooled is not None
        exact = self.graph_runs.run(grid)[1][pooled.name]
        return measure(self.runs.run(grid)[1][pooled.name], exact, pooled.name, "level 0").rel_l2

    def pipeline_cost(self, grid: Grid, whole: WholeModel) -> PipelineCost:
        """What the file's outputs on ``grid`` cost the whole model's next token against golden's
        (``judge/pipeline_cost.py``), measured once per grid; or why it is not measured."""
        import json

        from pytest_qwen3vl.judge.pipeline_cost import PipelineCost
        from pytest_qwen3vl.store.cache import file_digest
        from pytest_qwen3vl.versions import RUNTIME_LIBRARIES, library_versions

        def measure() -> PipelineCost:
            finding, values = self.runs.run(grid)
            gold = self.golden.outputs(grid)
            pooled = self.interface.pooled
            deepstack = [v for _, v in deepstack_values(self.interface, values)][: len(gold) - 1]
            if finding.error is not None:
                return PipelineCost(grid, absent=f"the file does not run on {grid.id}")
            if pooled is None or any(tuple(v.shape) != tuple(g.shape)
                                     for v, g in zip([values[pooled.name], *deepstack], gold, strict=False)):
                return PipelineCost(grid, absent=f"the file's outputs on {grid.id} have other shapes than golden's")
            return whole.cost(grid, values[pooled.name], deepstack)

        if grid not in self._costs and (why := whole.refusal()) is not None:  # before hashing a 1.3 GB file
            self._costs[grid] = PipelineCost(grid, absent=f"no language model: {why}")
        if grid not in self._costs:
            files = [self.path, *(self.path.parent / name for name in self.facts.external)]
            parts = {"file": " ".join(file_digest(f) for f in files), "runtime": self.runtime.key(),
                     "runtimes": json.dumps(library_versions(RUNTIME_LIBRARIES), sort_keys=True),
                     "interface": json.dumps(self.interface.to_dict(), sort_keys=True)}
            self._costs[grid] = whole.kept(parts, grid, measure)
        return self._costs[grid]

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

    def first_nonfinite(self, grid: Grid) -> str:
        """Where a NaN or Inf first appears on ``grid`` on this check's runtime, or why it could not be
        located there. The check's own session goes first: the exposing one is a second copy."""
        from pytest_qwen3vl.judge.locate import first_nonfinite

        feeds = self.runs.feeds(grid)
        self.runs.release()
        return first_nonfinite(self.path, self.runtime, feeds)

    def locate(self, grid: Grid) -> Location:
        """Where the graph goes wrong on ``grid``: the first module output outside the graph's relative
        L2 against golden holding the file's own weights."""
        return self.profile(grid).graph

    def locate_all(self, grids: Sequence[Grid]) -> list[Location]:
        """``locate`` on each of ``grids``, probed in one child process."""
        return [p.graph for p in self.profiles(grids)]

    def profile(self, grid: Grid, checkpoint: bool = False) -> Profile:
        """Each module's output on ``grid`` against golden holding the file's own weights and, with
        ``checkpoint``, against the checkpoint's golden too (``judge/locate.py``); see ``profiles``."""
        return self.profiles([grid], checkpoint)[0]

    def profiles(self, grids: Sequence[Grid], checkpoint: bool = False) -> list[Profile]:
        """``profile`` of each of ``grids``, kept per grid: the grids not yet probed go to one child
        process (at 4B each child loads the 1.3 GB file), one probe of the graph for both goldens where
        the graph is judged on the file itself, and golden holds the file's weights once for them."""
        from pytest_qwen3vl.errors import ProbeFailed
        from pytest_qwen3vl.judge.locate import Location, compare_probes, probe_in_child

        def done(grid: Grid) -> bool:
            kept = self._profiles.get(grid)
            return kept is not None and (kept.checkpoint is not None or not checkpoint)

        missing = list(dict.fromkeys(g for g in grids if not done(g)))
        if missing:
            goldens = [self.graph_golden(g) for g in missing]
            self.runs.release()
            self.graph_runs.release()
            feeds = [self.runs.feeds(g) for g in missing]
            try:
                found = probe_in_child(self.arithmetic.path, feeds)
                graph: dict[Grid, Location] = {}
                for golden in {id(gold): gold for gold in goldens}.values():
                    with golden.held():
                        for grid, gold, probed in zip(missing, goldens, found, strict=True):
                            if gold is golden:
                                graph[grid] = compare_probes(probed, golden.probes(grid), grid, self.graph_limit)
                against: list[Location | None] = [None] * len(missing)
                if checkpoint:
                    if self.arithmetic.path != self.path:  # the shipped file, not its fp32-activation copy
                        found = probe_in_child(self.path, feeds)
                    against = [compare_probes(probed, self.golden.probes(grid), grid, self.tolerance.rel_l2)
                               for grid, probed in zip(missing, found, strict=True)]
                for grid, other in zip(missing, against, strict=True):
                    self._profiles[grid] = Profile(graph[grid], other, self.graph_limit, self.tolerance.rel_l2)
            except ProbeFailed as exc:
                for grid in missing:
                    failed = Location(grid, None, (), None, problem=str(exc))
                    self._profiles[grid] = Profile(failed, failed if checkpoint else None, self.graph_limit,
                                                   self.tolerance.rel_l2)
        return [self._profiles[g] for g in grids]

    @property
    def graph_limit(self) -> float:
        """The relative L2 a module of the graph may drift from golden holding the file's own weights."""
        return self.tolerance.rel_l2 if self.weight_report.all_equal else self.arithmetic.tolerance.rel_l2
