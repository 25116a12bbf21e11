"""The runtime interface on ONNX Runtime's CPU: a file loads or the runtime says why not, runs on named
inputs, and only the runtime's own errors become a refusal (a finding about the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_qwen3vl.errors import ChoiceError, NotRunnable, RuntimeRefused
from pytest_qwen3vl.runtimes.base import Runtime
from pytest_qwen3vl.runtimes.onnxruntime import (
    LOW_MEMORY,
    OnnxRuntimeCPU,
    OrtSession,
    failed_node,
    ort_session,
    runtime_errors,
    runtime_failure,
)
from pytest_qwen3vl.runtimes.registry import RuntimeChoice, parse_runtime
from tests.helpers import tiny_encoder

PIXELS = np.arange(8, dtype=np.float32).reshape(2, 4)
GRID = np.array([[1, 1, 2]], dtype=np.int64)


def test_a_file_runs_on_named_inputs_and_gives_the_outputs_asked_for(tmp_path: Path) -> None:
    runtime = OnnxRuntimeCPU(config=LOW_MEMORY, threads=1)
    assert isinstance(runtime, Runtime) and runtime.label == "onnxruntime:fp32"
    session = runtime.load(tiny_encoder(tmp_path / "f.onnx", ("pooled_embeds", "deepstack_0")))
    every = session.run({"pixel_values": PIXELS, "image_grid_thw": GRID})
    assert list(every) == ["pooled_embeds", "deepstack_0"]
    np.testing.assert_array_equal(every["pooled_embeds"], PIXELS)
    assert list(session.run({"pixel_values": PIXELS, "image_grid_thw": GRID}, ["deepstack_0"])) == ["deepstack_0"]


def test_a_node_that_fails_is_a_refusal_naming_the_node(tmp_path: Path) -> None:
    session = OnnxRuntimeCPU(threads=1).load(tiny_encoder(tmp_path / "f.onnx", patches=4))
    with pytest.raises(RuntimeRefused) as raised:
        session.run({"pixel_values": PIXELS, "image_grid_thw": GRID})
    assert raised.value.node == ("Reshape", "the_reshape")
    assert str(raised.value).startswith("ONNX Runtime: Reshape node the_reshape: "), raised.value


def test_a_file_that_does_not_load_is_a_refusal(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(RuntimeRefused, match=r"^ONNX Runtime: \w+: "):
        OnnxRuntimeCPU(threads=1).load(path)


def test_a_fault_of_ours_is_no_refusal(tmp_path: Path) -> None:
    """A feed of the wrong rank is ONNX Runtime's InvalidArgument (a refusal); a feed that is no array at
    all never reaches the model: that error is ours and propagates as it is."""
    session = OnnxRuntimeCPU(threads=1).load(tiny_encoder(tmp_path / "f.onnx"))
    with pytest.raises(RuntimeRefused, match=r"^ONNX Runtime: InvalidArgument: "):
        session.run({"pixel_values": PIXELS[0], "image_grid_thw": GRID})
    with pytest.raises(Exception) as raised:
        session.run({"pixel_values": object(), "image_grid_thw": GRID})  # type: ignore[dict-item]
    assert not isinstance(raised.value, RuntimeRefused), raised.value


def test_runtime_errors_name_the_failing_node_and_only_onnx_runtimes_count() -> None:
    """A node's failure names the node; a bad feed is ONNX Runtime's too but names none; a plain
    RuntimeError (not ONNX Runtime's error classes) is not one of them."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="the_reshape")], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape")],
    )
    session = ort_session(helper.make_model(graph).SerializeToString())
    with pytest.raises(runtime_errors()) as node_failure:
        session.run(None, {"x": np.zeros(5, dtype=np.float32)})
    assert failed_node(node_failure.value) == ("Reshape", "the_reshape")
    assert runtime_failure(node_failure.value).startswith("Reshape node the_reshape: "), node_failure.value
    with pytest.raises(runtime_errors()) as bad_feed:
        session.run(None, {"x": np.zeros((5, 1), dtype=np.float32)})
    assert failed_node(bad_feed.value) is None
    assert runtime_failure(bad_feed.value).startswith("InvalidArgument: "), bad_feed.value
    assert not isinstance(RuntimeError("running Add node. Name:'a'"), runtime_errors())


def test_runtimes_are_named_with_their_setting() -> None:
    """``--qwen3vl-runtime=NAME[:SETTING]`` is parsed without importing the runtime; an unknown name or
    setting is refused naming what exists."""
    assert parse_runtime("openvino:F16") == RuntimeChoice("openvino", "f16")
    assert parse_runtime(" onnxruntime ").text == "onnxruntime"
    assert parse_runtime("openvino").text == "openvino" and parse_runtime("openvino").missing() is None
    with pytest.raises(ChoiceError, match=r"^runtime must be one of onnxruntime, onnxruntime-optimized, openvino, "
                                          r"onnxruntime-cuda, onnxruntime-tensorrt, onnxruntime-genai, "
                                          r"not 'tensorrt'$"):
        parse_runtime("tensorrt")
    with pytest.raises(ChoiceError, match=r"^openvino setting must be one of f32, bf16, f16, not 'i8'$"):
        parse_runtime("openvino:i8")
    with pytest.raises(ChoiceError, match=r"^runtime onnxruntime takes no setting, not 'fp16'$"):
        parse_runtime("onnxruntime:fp16")
    assert parse_runtime("onnxruntime-tensorrt:FP16") == RuntimeChoice("onnxruntime-tensorrt", "fp16")
    assert parse_runtime("onnxruntime-cuda:FP16") == RuntimeChoice("onnxruntime-cuda", "fp16")
    with pytest.raises(ChoiceError, match=r"^onnxruntime-cuda setting must be one of fp32, fp16, not 'bf16'$"):
        parse_runtime("onnxruntime-cuda:bf16")


def test_the_provider_list_is_what_the_session_runs_on(tmp_path: Path) -> None:
    """The GPU runtimes are this runtime with another provider list: passed through as given (here the
    CPU provider with an option, which ONNX Runtime does not report back for the CPU), and a session ONNX
    Runtime moved to another provider is not run."""
    path = tiny_encoder(tmp_path / "f.onnx")
    option = {"arena_extend_strategy": "kSameAsRequested"}
    session = OnnxRuntimeCPU(threads=1, providers=[("CPUExecutionProvider", option)]).load(path)
    assert isinstance(session, OrtSession)
    assert session.session.get_providers() == ["CPUExecutionProvider"]
    pooled = session.run({"pixel_values": PIXELS, "image_grid_thw": GRID})["pooled_embeds"]
    np.testing.assert_array_equal(pooled, PIXELS)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.warns(UserWarning, match="not in available provider names"), \
                pytest.raises(NotRunnable, match=r"^not run: ONNX Runtime loads f.onnx on CPUExecutionProvider, not on "
                                                 r"CUDAExecutionProvider \(a build without"):
            OnnxRuntimeCPU(threads=1, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]).load(path)


def test_a_gpu_runtime_is_offered_only_where_onnxruntime_lists_its_provider() -> None:
    """Rows of an absent provider are "not run" with what it needs; a listed one (the CPU's) is offered."""
    from pytest_qwen3vl.runtimes.ort_gpu import CUDA, TENSORRT, OrtGPU, absent

    assert absent("CPUExecutionProvider") is None
    offered = onnxruntime.get_available_providers()
    for provider, choice in ((CUDA, RuntimeChoice("onnxruntime-cuda")),
                             (TENSORRT, RuntimeChoice("onnxruntime-tensorrt", "fp16"))):
        if provider in offered:
            assert choice.missing() is None
            continue
        reason = f"needs onnxruntime-gpu and a GPU (the installed onnxruntime offers {', '.join(offered)})"
        assert choice.missing() == (reason if len(offered) > 1 else reason.replace(")", " only)")), choice.missing()
    tensorrt = OrtGPU("onnxruntime-tensorrt", "fp16")
    assert (tensorrt.label, tensorrt.arithmetic) == ("onnxruntime-tensorrt:fp16", "fp16")
    assert tensorrt.providers == (("TensorrtExecutionProvider", {"trt_fp16_enable": "True"}), "CUDAExecutionProvider",
                                  "CPUExecutionProvider")


def test_the_optimisers_rewrite_is_made_once_per_file_and_kept(tmp_path: Path) -> None:
    """The second load takes the kept rewrite; the session says which model type the optimiser took."""
    from pytest_qwen3vl.runtimes.ort_optimized import OrtOptimized
    from pytest_qwen3vl.store.cache import ArtifactCache

    path = tiny_encoder(tmp_path / "f.onnx")
    runtime = OrtOptimized(tmp_path / "cache", "fp16")
    assert (runtime.label, runtime.arithmetic) == ("onnxruntime-optimized:fp16", "fp16")
    first = runtime.load(path)
    assert first.note == "optimised as vit"
    np.testing.assert_array_equal(first.run({"pixel_values": PIXELS, "image_grid_thw": GRID})["pooled_embeds"], PIXELS)
    again, model_type = OrtOptimized(tmp_path / "cache", "fp16").rewrite(path)
    assert model_type == "vit" and again.is_file()
    assert len(ArtifactCache(tmp_path / "cache").builds()) == 1


def test_cuda_fp16_runs_a_converted_copy_kept_in_the_cache(tmp_path: Path) -> None:
    """``onnxruntime-cuda:fp16`` is the CUDA provider list on the file converted to fp16 (the optimiser
    runtime's conversion, without its fusions). Its path runs here on the CPU provider list: the copy holds
    float16 weights, keeps float32 inputs and outputs, is made once, and computes with its rounded weights; with its
    own provider list on this machine, the session ONNX Runtime moves to the CPU is not run."""
    import onnx

    from pytest_qwen3vl.runtimes.ort_gpu import CUDA, OrtCudaFp16
    from pytest_qwen3vl.store.cache import ArtifactCache

    weight = numpy_helper.from_array(np.full(4, 1 / 3, dtype=np.float32), "third")
    path = tiny_encoder(tmp_path / "f.onnx", initializers=[weight])
    model = onnx.load(str(path))  # pooled = pixels * 1/3: an fp32 weight the conversion must round
    model.graph.node.append(helper.make_node("Mul", ["pixel_values", "third"], ["scaled"]))
    model.graph.node[0].input[0] = "scaled"
    onnx.save_model(model, str(path))
    runtime = RuntimeChoice("onnxruntime-cuda", "fp16").make(tmp_path / "cache")
    assert isinstance(runtime, OrtCudaFp16)
    assert (runtime.label, runtime.arithmetic) == ("onnxruntime-cuda:fp16", "fp16")
    assert runtime.providers == ((CUDA, {"use_tf32": "0"}), "CPUExecutionProvider")
    on_cpu = OrtCudaFp16(tmp_path / "cache", providers=["CPUExecutionProvider"])
    session = on_cpu.load(path)
    assert session.note == "converted to fp16"
    pooled = session.run({"pixel_values": PIXELS, "image_grid_thw": GRID})["pooled_embeds"]
    assert pooled.dtype == np.float32
    # the weight rounded to fp16 (the CPU provider computes a float16 Mul in float32: it has no kernel)
    np.testing.assert_allclose(pooled, PIXELS * np.float32(np.float16(1 / 3)), rtol=1e-6)
    assert not np.array_equal(pooled, PIXELS * np.float32(1 / 3)), "the copy computes at fp32: not converted"
    copy, kind = on_cpu.rewrite(path)
    assert kind == "none" and len(ArtifactCache(tmp_path / "cache").builds()) == 1
    third = next(t for t in onnx.load(str(copy)).graph.initializer if t.name == "third")
    assert third.data_type == onnx.TensorProto.FLOAT16
    if CUDA not in onnxruntime.get_available_providers():
        with pytest.warns(UserWarning, match="not in available provider names"), \
                pytest.raises(NotRunnable, match=r"^not run: ONNX Runtime loads optimized.onnx on "
                                                 r"CPUExecutionProvider, not on CUDAExecutionProvider"):
            runtime.load(path)
