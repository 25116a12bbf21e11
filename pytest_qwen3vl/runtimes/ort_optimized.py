"""ONNX Runtime on the file as its offline transformer optimiser rewrites it: what many users ship.

``onnxruntime.transformers.optimizer.optimize_model`` fuses LayerNormalization and Gelu (fp32), and
the fp16 setting then converts the rewrite with ``convert_float_to_float16`` (inputs and outputs stay
float32). The optimiser takes ``model_type="vit"`` or ``"clip"``, whichever it accepts for the file
(``vit`` fails symbolic shape inference on some files); the session's ``note`` says which. Each
rewrite is made once per file content, setting and library versions, and kept in the cache. Without
fusions the rewrite is the fp16 conversion alone: what ``onnxruntime-cuda:fp16`` runs
(``runtimes/ort_gpu.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import RuntimeRefused, choose
from pytest_qwen3vl.runtimes.base import Session
from pytest_qwen3vl.runtimes.onnxruntime import CPU, LOW_MEMORY, MESSAGE_CHARS, OnnxRuntimeCPU, OrtSession, Provider

if TYPE_CHECKING:
    import numpy as np

MODEL_TYPES = ("vit", "clip")
# The cache key's model type of a rewrite made without the optimiser's fusions.
CONVERTED = "none"
SETTINGS = ("fp32", "fp16")
REWRITE = "optimized.onnx"


class _RewrittenSession(OrtSession):
    """The optimiser drops inputs no node reads (the grid input of a file traced at one grid): those are
    not fed to the rewrite."""

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        kept = {spec.name for spec in self.session.get_inputs()}
        return super().run({name: value for name, value in feeds.items() if name in kept}, outputs)


class OrtOptimized(OnnxRuntimeCPU):
    """ONNX Runtime's CPU provider (or ``providers``) on the optimiser's rewrite of a file; ``cache`` is the
    folder the rewrites are kept in (an ``ArtifactCache`` root). ``fusions`` False: the fp16 conversion only."""

    name = "onnxruntime-optimized"
    session_class = _RewrittenSession

    def __init__(self, cache: Path, precision: str = "fp32", *, fusions: bool = True,
                 providers: Sequence[Provider] = (CPU,)) -> None:
        super().__init__(config=LOW_MEMORY, providers=providers)
        self.precision = self.arithmetic = choose(f"{self.name} setting", precision, SETTINGS)
        self.cache = cache
        self.fusions = fusions

    def load(self, path: Path) -> Session:
        rewritten, model_type = self.rewrite(path)
        session = super().load(rewritten)
        session.note = f"optimised as {model_type}" if model_type != CONVERTED else f"converted to {self.precision}"
        return session

    def rewrite(self, path: Path) -> tuple[Path, str]:
        """The cached rewrite of ``path`` and the model type the optimiser took it as;
        ``RuntimeRefused`` when it takes it as neither."""
        from pytest_qwen3vl.store.cache import ArtifactCache, code_digest, file_digest
        from pytest_qwen3vl.versions import library_versions

        store = ArtifactCache(self.cache)
        parts = {"file": file_digest(path), "setting": self.precision, "code": code_digest("runtimes"),
                 "libraries": json.dumps(library_versions(("onnx", "onnxruntime")), sort_keys=True)}
        kinds = MODEL_TYPES if self.fusions else (CONVERTED,)
        keys = {kind: {**parts, "model_type": kind} for kind in kinds}
        # A model type already rewritten is taken again without asking the optimiser about the others.
        kept = [kind for kind in kinds if store.path_for(keys[kind], REWRITE).is_file()]
        reasons = []
        for kind in kept or kinds:
            try:
                made = store.get_or_create(keys[kind], REWRITE, partial(self._optimise, path, model_type=kind))
            except _Declined as exc:
                reasons.append(f"{kind} ({exc})")
                continue
            return made, kind
        raise RuntimeRefused(f"{self.name}: the optimiser takes the file neither as {' nor as '.join(reasons)}")

    def _optimise(self, source: Path, out: Path, model_type: str) -> None:
        import warnings

        import onnx
        from onnxruntime.transformers.onnx_model import OnnxModel
        from onnxruntime.transformers.optimizer import optimize_model

        if model_type == CONVERTED:
            model = OnnxModel(onnx.load(str(source)))
        else:
            # The optimiser is a Python library without error classes of its own: whatever it raises for
            # this file (a failed shape inference, an unsupported pattern) is its answer about the file.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = optimize_model(str(source), model_type=model_type, num_heads=0, hidden_size=0)
            except Exception as exc:
                text = " ".join(f"{type(exc).__name__}: {exc}".split())
                raise _Declined(text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…") from exc
        if self.precision == "fp16":
            model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(out), use_external_data_format=True)


class _Declined(Exception):
    """The optimiser did not take the file as one model type (never published: the other is tried)."""
