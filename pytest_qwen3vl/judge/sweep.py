"""Which grids a file serves: the one answer, for a recipe's file and for a user's own.

A file is loaded once per runtime and process and run on each grid once; each run becomes a
``Finding`` (served, refused, wrong) at the tolerance of the file's weight type. Outputs are matched
to golden's tensors through the file's interface (``onnxfile/interface.py``), so a recipe's names
and a user's (``image_features``, a stacked or mapped DeepStack) are compared by the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import RuntimeRefused
from pytest_qwen3vl.judge.finding import Finding
from pytest_qwen3vl.judge.tolerance import TOLERANCES, OutputParity, Tolerance, measure, row_for
from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import numpy as np

    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.onnxfile.interface import FileFacts, Interface
    from pytest_qwen3vl.runtimes.base import Runtime, Session


def deepstack_values(interface: Interface, values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The file's DeepStack outputs in their declared order, a stacked output split along axis 0; those a
    runtime does not expose (genai gives the image features only) are left out."""
    if interface.stacked is not None and interface.stacked.name in values:
        stacked = values[interface.stacked.name]
        return [(f"{interface.stacked.name}[{i}]", stacked[i]) for i in range(stacked.shape[0])]
    return [(p.name, values[p.name]) for p in interface.deepstack if p.name in values]


def compare(interface: Interface, values: Mapping[str, Any],
            gold: Sequence[Any]) -> tuple[tuple[OutputParity, ...], tuple[str, ...]]:
    """Each recognised output against golden's tensor (pooled, then DeepStack in order), and the
    outputs that could not be compared."""
    pairs: list[tuple[str, Any, str, Any]] = []
    if interface.pooled is not None:
        pairs.append((interface.pooled.name, values[interface.pooled.name], "pooled", gold[0]))
    deepstack = deepstack_values(interface, values)
    for i, (name, value) in enumerate(deepstack):
        if i + 1 < len(gold):
            pairs.append((name, value, f"DeepStack {i}", gold[i + 1]))
    outputs, problems = [], []
    for name, value, label, expected in pairs:
        if tuple(value.shape) != tuple(expected.shape):
            problems.append(f"{name} has shape {list(value.shape)}, golden {label} {list(expected.shape)}")
            continue
        outputs.append(measure(value, expected, name, label))
    extra = len(deepstack) - (len(gold) - 1)
    if extra > 0:
        problems.append(f"{extra} more DeepStack outputs than golden's {len(gold) - 1}")
    return tuple(outputs), tuple(problems)


class FileRuns:
    """One file on one runtime against golden: its session, and each grid's finding and outputs."""

    def __init__(self, facts: FileFacts, runtime: Runtime, golden: GoldenRuns, tolerance: Tolerance) -> None:
        self.facts = facts
        self.runtime = runtime
        self.golden = golden
        self.tolerance = tolerance
        self._session: Session | None = None
        self._load_error: str | None = None
        self._runs: dict[Grid, tuple[Finding, dict[str, np.ndarray]]] = {}

    def session(self) -> Session | None:
        """The loaded file, or None when the runtime refuses it (``load_error`` says why)."""
        if self._session is None and self._load_error is None:
            try:
                self._session = self.runtime.for_ops(self.facts.ops).load(self.facts.path)
            except RuntimeRefused as exc:
                self._load_error = str(exc)
        return self._session

    @property
    def load_error(self) -> str | None:
        """Why the runtime refuses the file, once ``session()`` was asked (None: it loads)."""
        return self._load_error

    def release(self) -> None:
        """Drop the session (every grid's run is kept): at 4B one session less is ~1.4 GB less."""
        self._session = None

    def feeds(self, grid: Grid) -> dict[str, np.ndarray]:
        """The golden inputs cast to the element types the file declares (runtimes never convert)."""
        import numpy as np

        iface = self.facts.interface
        pixels, thw = self.golden.inputs(grid)
        feeds: dict[str, np.ndarray] = {iface.pixels.name: pixels.astype(np.dtype(iface.pixels.elem_type))}
        if iface.grid is not None:
            feeds[iface.grid.name] = thw.astype(np.dtype(iface.grid.elem_type))
        return feeds

    def finding(self, grid: Grid) -> Finding:
        return self.run(grid)[0]

    def run(self, grid: Grid) -> tuple[Finding, dict[str, np.ndarray]]:
        """The grid's finding and the file's outputs there (none when the runtime refused)."""
        if grid not in self._runs:
            self._runs[grid] = self._run(grid)
        return self._runs[grid]

    def _run(self, grid: Grid) -> tuple[Finding, dict[str, np.ndarray]]:
        base = (self.facts.path.name, self.runtime.label, grid, self.tolerance)
        session = self.session()
        if session is None:
            return Finding(*base, error=self._load_error), {}
        feeds = self.feeds(grid)  # outside the try: a fault in building them is ours, not the file's
        try:
            values = session.run(feeds, [p.name for p in self.facts.interface.outputs])
        except RuntimeRefused as exc:
            return Finding(*base, error=str(exc)), {}
        outputs, problems = compare(self.facts.interface, values, self.golden.outputs(grid))
        return Finding(*base, outputs=outputs, problems=problems), values


def sweep(path: Any, runtime: Runtime, golden: GoldenRuns, grids: Iterable[Grid]) -> list[Finding]:
    """A file this package made (fp32, names it recognises) on each grid: one finding per grid, at the
    tolerance of its weight type or of the runtime's arithmetic, whichever is looser."""
    from pathlib import Path

    from pytest_qwen3vl.onnxfile.interface import read_file

    facts = read_file(Path(path))
    runs = FileRuns(facts, runtime, golden, TOLERANCES[row_for(facts.weights.name, runtime.arithmetic)])
    return [runs.finding(grid) for grid in grids]
