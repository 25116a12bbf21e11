"""The runtimes a run can name, ``NAME[:SETTING]``: parsed without importing any runtime library (the
runtime modules import theirs inside functions), so an unknown name is a usage error at start-up and a
runtime that is not installed is "not run", never a verdict."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_qwen3vl.errors import ChoiceError, choose
from pytest_qwen3vl.runtimes.base import Runtime
from pytest_qwen3vl.runtimes.genai import GENAI_RUNTIME, OnnxRuntimeGenai
from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, OnnxRuntimeCPU
from pytest_qwen3vl.runtimes.openvino import PRECISIONS, OpenVINO
from pytest_qwen3vl.runtimes.ort_gpu import PROVIDERS as GPU_PROVIDERS
from pytest_qwen3vl.runtimes.ort_gpu import SETTINGS as GPU_SETTINGS
from pytest_qwen3vl.runtimes.ort_gpu import absent, gpu_runtime
from pytest_qwen3vl.runtimes.ort_optimized import SETTINGS as OPTIMIZED_SETTINGS
from pytest_qwen3vl.runtimes.ort_optimized import OrtOptimized


@dataclass(frozen=True)
class Entry:
    """A runtime by name: the module it needs, the extra that installs it, its settings, and the ONNX
    Runtime provider it needs listed."""

    module: str
    extra: str | None
    settings: tuple[str, ...] = ()
    provider: str | None = None


# "onnxruntime" is a dependency, so it has no extra; openvino's settings are its precision hints
# (no setting: OpenVINO's own default precision, which depends on the CPU); the optimiser's are its
# rewrite's arithmetic (no setting: fp32, fusions only); the GPU providers' are their arithmetic (no
# setting: fp32); onnxruntime-genai runs fp32 only.
RUNTIMES: dict[str, Entry] = {
    "onnxruntime": Entry("onnxruntime", None),
    "onnxruntime-optimized": Entry("onnxruntime", None, OPTIMIZED_SETTINGS),
    "openvino": Entry("openvino", "openvino", PRECISIONS),
    **{name: Entry("onnxruntime", None, GPU_SETTINGS[name], provider) for name, provider in GPU_PROVIDERS.items()},
    GENAI_RUNTIME: Entry("onnxruntime_genai", "genai"),
}
DEFAULT_RUNTIME = "onnxruntime"


@dataclass(frozen=True)
class RuntimeChoice:
    """A runtime as named on the command line; ``make()`` builds it (importing it), ``missing()`` says
    why it cannot run here."""

    name: str
    setting: str | None = None

    @property
    def text(self) -> str:
        return f"{self.name}:{self.setting}" if self.setting else self.name

    def missing(self) -> str | None:
        """How to install the runtime when its module is absent, or what its provider needs when the
        installed onnxruntime does not list it, else None."""
        entry = RUNTIMES[self.name]
        if importlib.util.find_spec(entry.module) is None:
            return f"pip install pytest-qwen3vl[{entry.extra}]" if entry.extra else f"pip install {entry.module}"
        return absent(entry.provider) if entry.provider else None

    def make(self, cache: Path, genai_folder: Callable[[], Path] | None = None) -> Runtime:
        """The runtime; ``cache`` is where a runtime that rewrites files keeps the rewrites, ``genai_folder``
        gives the genai model folder onnxruntime-genai loads a file into (the session's)."""
        if self.name == GENAI_RUNTIME:
            if genai_folder is None:
                raise ValueError(f"{GENAI_RUNTIME} needs a genai folder")
            return OnnxRuntimeGenai(genai_folder)
        if self.name == "openvino":
            return OpenVINO(self.setting)
        if self.name == "onnxruntime-optimized":
            return OrtOptimized(cache, self.setting or "fp32")
        if self.name in GPU_PROVIDERS:
            return gpu_runtime(self.name, self.setting or "fp32", cache)
        return OnnxRuntimeCPU(config=LOW_MEMORY)


def parse_runtime(text: str) -> RuntimeChoice:
    """``openvino:f16`` -> RuntimeChoice; ``ChoiceError`` naming what exists for an unknown name or setting."""
    name, _, setting = (part.strip() for part in text.strip().partition(":"))
    entry = RUNTIMES[choose("runtime", name.lower(), tuple(RUNTIMES))]
    if setting:
        if not entry.settings:
            raise ChoiceError(f"runtime {name} takes no setting, not {setting!r}")
        choose(f"{name} setting", setting.lower(), entry.settings)
    return RuntimeChoice(name.lower(), setting.lower() or None)
