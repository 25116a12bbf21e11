"""ONNX Runtime's CUDA and TensorRT providers: the ONNX Runtime runtime with another provider list.

They are offered only where the installed onnxruntime lists their provider (``onnxruntime-gpu``
replaces ``onnxruntime``); elsewhere their rows are "not run" with the reason. Untested on a GPU here:
``benchmarks/gpu.py`` is what to run on one. onnxruntime is imported inside the functions.
"""

from __future__ import annotations

from pytest_qwen3vl.errors import choose
from pytest_qwen3vl.runtimes.onnxruntime import CPU, LOW_MEMORY, OnnxRuntimeCPU, Provider

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Runtime name -> its provider. CUDA runs the file's own arithmetic (TF32 matmuls turned off, which
# ONNX Runtime otherwise allows on Ampere and later); TensorRT builds at fp32 or, asked, at fp16.
PROVIDERS = {"onnxruntime-cuda": CUDA, "onnxruntime-tensorrt": TENSORRT}
SETTINGS = {"onnxruntime-cuda": ("fp32",), "onnxruntime-tensorrt": ("fp32", "fp16")}


def absent(provider: str) -> str | None:
    """Why ``provider`` cannot run here (the installed onnxruntime does not list it), else None."""
    import onnxruntime

    offered = onnxruntime.get_available_providers()
    if provider in offered:
        return None
    listed = offered[0] + " only" if len(offered) == 1 else ", ".join(offered)
    return f"needs onnxruntime-gpu and a GPU (the installed onnxruntime offers {listed})"


class OrtGPU(OnnxRuntimeCPU):
    """``name`` (a key of ``PROVIDERS``) at ``precision``; nodes its provider does not take fall back as
    they do for users: TensorRT's to CUDA, then the CPU."""

    def __init__(self, name: str, precision: str = "fp32") -> None:
        self.name = name
        self.precision = self.arithmetic = choose(f"{name} setting", precision, SETTINGS[name])
        first: list[Provider]
        if name == "onnxruntime-tensorrt":
            first = [(TENSORRT, {"trt_fp16_enable": "True" if precision == "fp16" else "False"}), CUDA]
        else:
            first = [(CUDA, {"use_tf32": "0"})]
        super().__init__(config=LOW_MEMORY, providers=[*first, CPU])
