"""ONNX Runtime's CUDA and TensorRT providers: the ONNX Runtime runtime with another provider list.

They are offered only where the installed onnxruntime lists their provider (``onnxruntime-gpu``
replaces ``onnxruntime``); elsewhere their rows are "not run" with the reason. The CUDA provider has no
fp16 switch: ``onnxruntime-cuda:fp16`` runs a copy of the file converted to fp16, the conversion
``onnxruntime-optimized:fp16`` makes without the optimiser's fusions, kept in the cache the same way.
Untested on a GPU here:
``benchmarks/gpu.py`` is what to run on one. onnxruntime is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from pytest_qwen3vl.errors import choose
from pytest_qwen3vl.runtimes.onnxruntime import CPU, LOW_MEMORY, OnnxRuntimeCPU, Provider
from pytest_qwen3vl.runtimes.ort_optimized import OrtOptimized

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Runtime name -> its provider. CUDA runs the file's own arithmetic (TF32 matmuls turned off, which
# ONNX Runtime otherwise allows on Ampere and later), or its fp16 copy; TensorRT builds at fp32 or,
# asked, at fp16.
PROVIDERS = {"onnxruntime-cuda": CUDA, "onnxruntime-tensorrt": TENSORRT}
SETTINGS = {"onnxruntime-cuda": ("fp32", "fp16"), "onnxruntime-tensorrt": ("fp32", "fp16")}


def absent(provider: str) -> str | None:
    """Why ``provider`` cannot run here (the installed onnxruntime does not list it), else None."""
    import onnxruntime

    offered = onnxruntime.get_available_providers()
    if provider in offered:
        return None
    listed = offered[0] + " only" if len(offered) == 1 else ", ".join(offered)
    return f"needs onnxruntime-gpu and a GPU (the installed onnxruntime offers {listed})"


def provider_list(name: str, precision: str) -> list[Provider]:
    """The providers ``name`` (a key of ``PROVIDERS``) runs on at ``precision``: nodes its provider does not
    take fall back as they do for users, TensorRT's to CUDA, then the CPU."""
    first: list[Provider]
    if name == "onnxruntime-tensorrt":
        first = [(TENSORRT, {"trt_fp16_enable": "True" if precision == "fp16" else "False"}), CUDA]
    else:
        first = [(CUDA, {"use_tf32": "0"})]
    return [*first, CPU]


class OrtGPU(OnnxRuntimeCPU):
    """``name`` (a key of ``PROVIDERS``) at ``precision``, on the file as it is."""

    def __init__(self, name: str, precision: str = "fp32") -> None:
        self.name = name
        self.precision = self.arithmetic = choose(f"{name} setting", precision, SETTINGS[name])
        super().__init__(config=LOW_MEMORY, providers=provider_list(name, precision))


class OrtCudaFp16(OrtOptimized):
    """The CUDA provider on the file converted to fp16 (inputs and outputs stay float32); ``cache`` keeps
    the converted copies. ``providers`` replaces the CUDA list: the CPU self-tests run this path there."""

    name = "onnxruntime-cuda"

    def __init__(self, cache: Path, providers: list[Provider] | None = None) -> None:
        super().__init__(cache, "fp16", fusions=False, providers=providers or provider_list(self.name, "fp16"))


def gpu_runtime(name: str, precision: str, cache: Path) -> OnnxRuntimeCPU:
    """The GPU runtime ``name`` at ``precision``; ``cache`` keeps the fp16 copies ``onnxruntime-cuda:fp16`` runs."""
    if name == "onnxruntime-cuda" and precision == "fp16":
        return OrtCudaFp16(cache)
    return OrtGPU(name, precision)
