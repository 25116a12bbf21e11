"""The ONNX files a test session needs, each exported once for the whole run.

Every export goes through the content-addressed ``ArtifactCache``: the first xdist worker that asks
for a (file, grid, wrapper, exporter) exports it under a file lock, the others wait and then read the
published file, and later runs with the same sources, config, seed and library versions export
nothing. An export that fails (the dynamo exporter on this model) is not cached on disk; it is
remembered in the process, so every test that asks again gets the same one-line ``ExportFailed``
without paying for the attempt again.

torch, onnx and onnxruntime are imported only when an export, a session or a run needs them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.cache import ArtifactCache, cache_key, library_versions
from pytest_qwen3vl.export import DEFAULT_OPSET, EXPORTER_NAMES, WRAPPER_NAMES, ExportFailed, export_vision
from pytest_qwen3vl.settings import Grid
from pytest_qwen3vl.sources import sha256_file

if TYPE_CHECKING:
    import onnxruntime

    from pytest_qwen3vl.models import ModelSpec, VisionPair

ROLES = ("golden", "modified")


class SessionExports:
    """``exports(which, grid, wrapper="pooled", exporter="torchscript") -> Path`` of the ONNX file.

    ``which`` is "golden" or "modified"; the model is exported on ``make_inputs(grid, spec, seed)``
    with ``export_vision``. The file must be treated as read-only: other tests and workers share it.
    """

    def __init__(
        self,
        pair: VisionPair,
        sources: dict[str, Path],
        spec: ModelSpec,
        seed: int,
        cache_dir: Path,
        *,
        opset: int = DEFAULT_OPSET,
    ) -> None:
        self.cache = ArtifactCache(cache_dir)
        self.opset = opset
        self._pair = pair
        self._spec = spec
        self._seed = seed
        self._digests = {role: sha256_file(path) for role, path in sources.items()}
        self._failures: dict[str, ExportFailed] = {}
        self._sessions: dict[Path, onnxruntime.InferenceSession] = {}
        self._created = time.time()

    def key_parts(self, which: str, grid: Grid, wrapper: str, exporter: str) -> dict[str, str]:
        """What the export is made from. The golden file's hash is in every key: golden's
        initialisation draws the weights that the modified model shares."""
        sources = {"golden": self._digests["golden"]}
        if which == "modified":
            sources["modified"] = self._digests["modified"]
        return {
            "model": which,
            "sources": json.dumps(sources, sort_keys=True),
            "config": self._spec.key(),
            "seed": str(self._seed),
            "grid": grid.text,
            "wrapper": wrapper,
            "exporter": exporter,
            "opset": str(self.opset),
            "libraries": json.dumps(library_versions(), sort_keys=True),
        }

    def __call__(self, which: str, grid: Grid, wrapper: str = "pooled", exporter: str = "torchscript") -> Path:
        """The published ONNX file; raises ``ExportFailed`` (once per process, then from memory)."""
        for name, value, allowed in (("which", which, ROLES), ("wrapper", wrapper, WRAPPER_NAMES),
                                     ("exporter", exporter, EXPORTER_NAMES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        parts = self.key_parts(which, grid, wrapper, exporter)
        filename = f"{which}-{wrapper}-{exporter}-{grid.id}.onnx"
        key = cache_key(parts, filename)
        if key in self._failures:
            raise self._failures[key].with_traceback(None)
        model = getattr(self._pair, which)

        def build(path: Path) -> None:
            from pytest_qwen3vl.inputs import make_inputs

            inputs = make_inputs(grid, self._spec, self._seed)
            export_vision(model, *inputs.args, path, wrapper=wrapper, exporter=exporter, opset=self.opset)

        try:
            return self.cache.get_or_create(parts, filename, build)
        except ExportFailed as exc:
            self._failures[key] = exc
            raise

    def session(self, path: Path) -> onnxruntime.InferenceSession:
        """An ONNX Runtime session for an exported file, made once per file in this process."""
        if path not in self._sessions:
            from pytest_qwen3vl.graph import ort_session

            self._sessions[path] = ort_session(path)
        return self._sessions[path]

    @property
    def builds(self) -> list[dict[str, Any]]:
        """The exports this process ran (built or failed), from the cache's ``builds.log``.

        Under xdist each worker sees its own; the log itself holds every worker's lines, so a run's
        total is the log's lines written during the run.
        """
        return [b for b in self.cache.builds() if b["pid"] == os.getpid() and b["time"] >= self._created]
