"""The ONNX files a test session needs, each exported once for the whole run.

Every export goes through the content-addressed ``ArtifactCache``: the first xdist worker that asks
for a (file, grid, wrapper, exporter) exports it under a file lock, the others wait and then read the
published file, and later runs with the same sources, config, seed and library versions export
nothing. An export that fails (the dynamo exporter on this model) is remembered by the cache under
the same key, so every later request gets the same one-line ``ExportFailed`` without paying for the
attempt again, in this run and the next, until an input changes. What is measured on a published
file (``sweep``, ``signature``, ``digest``) or on a model under ``torch.jit.trace``
(``deepstack_calls``, ``trace_hazards``) is kept the same way under ``<cache dir>/exports/measured``.

torch, onnx and onnxruntime are imported only when an export, a session or a run needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_qwen3vl.errors import ModelRaised, choose
from pytest_qwen3vl.export.builder import DEFAULT_OPSET, EXPORTER_NAMES, WRAPPER_NAMES, export_vision
from pytest_qwen3vl.export.recipes import LAYOUTS, RECIPE_NAMES, RECIPES, export_recipe, wrapper_for
from pytest_qwen3vl.model.grids import SWEEP, Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.source.files import sha256_file
from pytest_qwen3vl.store.cache import MAKING, MEASURING, ArtifactCache, CacheTally, Fallbacks, Unpublished, code_digest
from pytest_qwen3vl.versions import RUNTIME_LIBRARIES, library_versions

if TYPE_CHECKING:
    import onnxruntime
    import torch

    from pytest_qwen3vl.export.tracing import TraceHazard
    from pytest_qwen3vl.judge.finding import Finding
    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.runtimes.base import Runtime

ROLES = ("golden", "modified")


class SessionExports:
    """``exports(which, grid, wrapper="pooled", exporter="torchscript") -> Path`` of the ONNX file.

    ``which`` is "golden" or "modified"; the model is exported on ``make_inputs(grid, spec, seed)``
    with ``export_vision``. ``exports.recipe(which, name, grid)`` exports with a recipe of
    ``export/recipes.py`` instead. The file must be treated as read-only: other tests and workers share it.
    """

    def __init__(
        self,
        models: Mapping[str, torch.nn.Module],
        sources: Mapping[str, Path],
        spec: ModelSpec,
        seed: int,
        cache_dir: Path,
        *,
        opset: int = DEFAULT_OPSET,
        on_event: Callable[[str], None] | None = None,
        fallbacks: Fallbacks | None = None,
    ) -> None:
        fallbacks = fallbacks or Fallbacks()
        self.cache = ArtifactCache(cache_dir, on_event, fallbacks)
        self.measured = ArtifactCache(cache_dir / "measured", fallbacks=fallbacks.under("measured"))
        self.opset = opset
        # Read on first use, not copied: the modified side is made (or fails, in one line) only for the
        # claims that ask for it, so golden's claims never depend on the modified file.
        self._models = models
        self._spec = spec
        self._seed = seed
        self._sources = sources
        self._digests: dict[str, str] = {}
        self._sessions: dict[Path, onnxruntime.InferenceSession] = {}
        self._created = time.time()

    def model_parts(self, which: str, grid: Grid) -> dict[str, str]:
        """What the model on a grid is made from. The golden file's hash is in every key: golden's
        initialisation draws the weights that the modified model shares."""
        sources = {"golden": self._digest("golden")}
        if which == "modified":
            sources["modified"] = self._digest("modified")
        return {
            "model": which,
            "sources": json.dumps(sources, sort_keys=True),
            "config": self._spec.key(),
            "seed": str(self._seed),
            "grid": grid.text,
            "libraries": json.dumps(library_versions(), sort_keys=True),
            "code": code_digest(),
        }

    def _digest(self, role: str) -> str:
        if role not in self._digests:
            self._digests[role] = sha256_file(self._sources[role])
        return self._digests[role]

    def key_parts(self, which: str, grid: Grid, wrapper: str, exporter: str, recipe: str = "builder") -> dict[str, str]:
        """What the export is made from: the model on the grid, and how it is exported."""
        return {
            **self.model_parts(which, grid),
            "wrapper": wrapper,
            "exporter": exporter,
            "opset": str(self.opset),
            "recipe": recipe,
        }

    def __call__(self, which: str, grid: Grid, wrapper: str = "pooled", exporter: str = "torchscript") -> Path:
        """The published ONNX file; raises ``ExportFailed`` (tried once, then remembered by the cache)."""
        for what, value, allowed in (("which", which, ROLES), ("wrapper", wrapper, WRAPPER_NAMES),
                                     ("exporter", exporter, EXPORTER_NAMES)):
            choose(what, value, allowed)
        parts = self.key_parts(which, grid, wrapper, exporter)
        filename = f"{which}-{wrapper}-{exporter}-{grid.id}.onnx"
        model = self._models[which]  # made (or failed, in one line) before the cache is touched

        def build(path: Path) -> None:
            inputs = make_inputs(grid, self._spec, self._seed)
            export_vision(model, *inputs.args, path, wrapper=wrapper, exporter=exporter, opset=self.opset)

        return self.cache.get_or_create(parts, filename, build)

    def recipe(
        self, which: str, name: str, grid: Grid, *, layout: str = "split", exporter: str = "torchscript"
    ) -> Path:
        """The ONNX file of recipe ``name`` traced at ``grid``; raises ``ExportFailed`` as ``__call__`` does."""
        for what, value, allowed in (("which", which, ROLES), ("name", name, RECIPE_NAMES),
                                     ("layout", layout, LAYOUTS), ("exporter", exporter, EXPORTER_NAMES)):
            choose(what, value, allowed)
        wrapper = wrapper_for(RECIPES[name], layout)
        parts = self.key_parts(which, grid, wrapper, exporter, recipe=name)
        filename = f"{which}-{name}-{wrapper}-{exporter}-{grid.id}.onnx"
        model = self._models[which]

        def build(path: Path) -> None:
            export_recipe(model, name, path, grid=grid, opset=self.opset, layout=layout, exporter=exporter,
                          seed=self._seed)

        return self.cache.get_or_create(parts, filename, build)

    def sweep(self, path: Path, grids: Sequence[Grid] = SWEEP, runtime: Runtime | None = None) -> list[Finding]:
        """What a file this cache published does on each of ``grids`` on ``runtime`` (default ONNX
        Runtime's CPU) against golden (``judge/sweep.py``), measured once per (file content, golden file,
        config, seed, grids, runtime and its precision, judging code): the other workers and later runs
        read the findings instead of running golden and the runtime on every grid again.

        Findings with a grid not served are returned but not kept: a verdict against the file is
        measured in the run that reports it.
        """
        from pytest_qwen3vl.judge.finding import Finding
        from pytest_qwen3vl.judge.golden import GoldenRuns
        from pytest_qwen3vl.judge.sweep import sweep
        from pytest_qwen3vl.runtimes.onnxruntime import OnnxRuntimeCPU

        runner = runtime or OnnxRuntimeCPU()

        def measure() -> str:
            golden = GoldenRuns(self._models["golden"], self._spec, self._seed)
            findings = sweep(path, runner, golden, grids)
            if not all(f.served for f in findings):
                raise Unpublished(findings)
            return json.dumps([f.to_dict() for f in findings])

        try:
            return [Finding.from_dict(data) for data in json.loads(self._measured(
                path, "onnx-sweep", measure, code=code_digest(*MEASURING),
                golden=self._digest("golden"), config=self._spec.key(), seed=str(self._seed),
                grids=" ".join(grid.text for grid in grids), runtime=runner.key(),
                runtimes=json.dumps(library_versions(RUNTIME_LIBRARIES), sort_keys=True),
            ))]
        except Unpublished as wrong:
            findings: list[Finding] = wrong.value
            return findings

    def signature(self, path: Path) -> dict[str, Any]:
        """``graph_signature`` of a file this cache published, measured once per file content: a warm
        run reads it and never imports onnx (over a second per process)."""
        from pytest_qwen3vl.onnxfile.signature import graph_signature

        signature: dict[str, Any] = json.loads(self._measured(
            path, "graph-signature", lambda: json.dumps(graph_signature(path)), code=code_digest("onnxfile")
        ))
        return signature

    def digest(self, path: Path) -> str:
        """``graph_digest`` of a file this cache published, measured once per file content."""
        from pytest_qwen3vl.onnxfile.signature import graph_digest

        return self._measured(path, "graph-digest", lambda: graph_digest(path), code=code_digest("onnxfile"))

    def deepstack_calls(self, which: str, grid: Grid, *, trace: bool, flag: bool | None) -> list[int]:
        """``count_deepstack_calls`` of a model on ``make_inputs(grid, spec, seed)``, eager or traced, with
        ``flag``: measured once per (model's sources, config, seed, grid, case, library versions, code).

        A model that raises raises ``ModelRaised`` with its exception, and is measured again on the
        next request; anything else that goes wrong is the cache's, and propagates as it is.
        """
        from pytest_qwen3vl.export.tracing import count_deepstack_calls

        choose("which", which, ROLES)
        model = self._models[which]  # made (or failed, in one line) before the cache is touched

        def measure() -> str:
            inputs = make_inputs(grid, self._spec, self._seed)
            try:
                counts = count_deepstack_calls(model, *inputs.args, trace=trace, flag=flag)
            except Exception as exc:  # the model's own failure: the caller's verdict, never kept
                raise Unpublished(exc) from exc
            return json.dumps(counts)

        parts = {**self.model_parts(which, grid), "trace": str(trace), "flag": str(flag)}
        try:
            kept: list[int] = json.loads(self._kept("deepstack-calls", parts, measure))
        except Unpublished as raised:
            raise ModelRaised(raised.value) from raised.value
        return kept

    def trace_hazards(self, which: str, grid: Grid) -> list[TraceHazard]:
        """``trace_hazards`` of a model on ``make_inputs(grid, spec, seed)``, measured once per (model's
        sources, config, seed, grid, library versions, code). The hazards name the files: a source's path
        is kept as its role and named again on reading, so a cache copied or restored elsewhere, or a
        source file moved, still serves them."""
        from pytest_qwen3vl.export.tracing import TraceHazard, trace_hazards

        choose("which", which, ROLES)
        model = self._models[which]
        paths = {role: {str(path), str(path.resolve())} for role, path in self._sources.items()}

        def measure() -> str:
            inputs = make_inputs(grid, self._spec, self._seed)
            hazards = trace_hazards(model, *inputs.args)
            roles = {path: f"<{role}>" for role, named in paths.items() for path in named}
            return json.dumps([{**dataclasses.asdict(h), "path": roles.get(h.path, h.path)} for h in hazards])

        named = {f"<{role}>": str(path) for role, path in self._sources.items()}
        kept = json.loads(self._kept("trace-hazards", self.model_parts(which, grid), measure))
        return [TraceHazard(**{**hazard, "path": named.get(hazard["path"], hazard["path"])}) for hazard in kept]

    def pipeline(self, grids: Sequence[Grid]) -> dict[str, Any]:
        """``judge.pipeline.measure`` on ``grids``: golden's whole model fed, per grid, golden's export
        with every DeepStack output and the modified file's export. Kept per (the files' sha256, golden
        file, config, seed, library versions, measuring code), so one process per run builds the whole
        model, in a child process at a released size. A file that cannot be made (the modified file's
        own failure) has no gap: the test that needs it says why before it reads one. ``ConfigError``
        when the config gives no whole model; ``NotRunnable`` when it cannot fit this machine;
        ``ProbeFailed`` when the child process fails."""
        from pytest_qwen3vl.errors import Qwen3VLError
        from pytest_qwen3vl.judge import pipeline as measuring

        files: dict[str, dict[str, str | None]] = {}
        for grid in grids:
            files[grid.text] = {}
            for role, which, wrapper in ((measuring.DEEPSTACK, "golden", "all"),
                                         (measuring.POOLED, "modified", "pooled")):
                try:
                    files[grid.text][role] = str(self(which, grid, wrapper=wrapper))
                except (Qwen3VLError, pytest.fail.Exception):  # the file's own failure, not this measurement's
                    files[grid.text][role] = None
        request = measuring.Request(str(self._sources["golden"]), self._spec.name, self._seed, files)

        def measure() -> str:
            if measuring.plan(request):
                return json.dumps(measuring.measure_in_child(request))
            return json.dumps(measuring.measure(request, self._models["golden"]))  # the session's tower

        shas = {text: {role: None if path is None else self.cache.recorded_sha256(Path(path))
                       for role, path in made.items()} for text, made in files.items()}
        parts = {"golden": self._digest("golden"), "config": self._spec.key(), "seed": str(self._seed),
                 "files": json.dumps(shas, sort_keys=True), "libraries": json.dumps(library_versions(), sort_keys=True),
                 "code": code_digest(*MAKING, "runtimes", "judge.pipeline")}
        measured: dict[str, Any] = json.loads(self._kept("pipeline", parts, measure))
        return measured

    def _measured(self, path: Path, kind: str, measure: Callable[[], str], *, code: str, **parts: str) -> str:
        """What ``measure()`` says about a published file, kept under (kind, the file's sha256 from its
        verified manifest, ``parts``, library versions, ``code``: the digest of the code that measures)."""
        key = {
            "file": self.cache.recorded_sha256(path),
            "libraries": json.dumps(library_versions(), sort_keys=True),
            "code": code,
            **parts,
        }
        return self._kept(kind, key, measure)

    def _kept(self, kind: str, parts: Mapping[str, str], measure: Callable[[], str]) -> str:
        """``measure()``'s text, kept in ``measured`` under ``kind`` and ``parts``; made once per key."""

        def build(out: Path) -> None:
            out.write_text(measure(), encoding="utf-8")

        return self.measured.get_or_create({"kind": kind, **parts}, f"{kind}.txt", build).read_text(encoding="utf-8")

    def session(self, path: Path) -> onnxruntime.InferenceSession:
        """An ONNX Runtime session for an exported file, made once per file in this process."""
        if path not in self._sessions:
            from pytest_qwen3vl.runtimes.onnxruntime import ort_session

            self._sessions[path] = ort_session(path)
        return self._sessions[path]

    @property
    def builds(self) -> list[dict[str, Any]]:
        """The exports this process ran (built or failed), from the cache's ``builds.log``.

        Under xdist each worker sees its own; the log itself holds every worker's lines, so a run's
        total is the log's lines written during the run.
        """
        return [b for b in self.cache.builds() if b["pid"] == os.getpid() and b["time"] >= self._created]


TALLY_KEY = pytest.StashKey[CacheTally]()
WORKER_OUTPUT = "qwen3vl_cache_events"
FAULTS_OUTPUT = "qwen3vl_cache_faults"
