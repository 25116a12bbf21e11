"""ONNX export of the vision encoder, done the way a downstream builder does it.

The builder's call: inputs ``pixel_values`` [num_patches, 1536] and ``image_grid_thw``
[num_images, 3], output ``pooled_embeds`` [num_merged_patches, out_hidden_size] (the merged
embeddings, read by ``pytest_qwen3vl.model.outputs`` on every transformers version), opset 17,
constant folding on, the TorchScript exporter, eager attention (on 4.57.6 the exporter cannot
convert SDPA with ``enable_gqa``) and ``_skip_deepstack_export`` set on the model. Every setting the export
changes on the model is put back afterwards, also when the export fails.

torch and onnx are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ExporterUnavailable, ExportFailed, choose
from pytest_qwen3vl.model.build import deepstack_export_flag
from pytest_qwen3vl.onnxfile.names import BUILDER_DEEPSTACK_PREFIX, INPUT_NAMES, POOLED_OUTPUT, STACKED_OUTPUT

if TYPE_CHECKING:
    import torch

WRAPPER_NAMES = ("pooled", "first", "all", "stacked", "tuple")
EXPORTER_NAMES = ("torchscript", "dynamo")
INPUT_AXES = {"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"}}
OUTPUT_AXIS = {0: "num_merged_patches"}
STACKED_AXIS = {1: "num_merged_patches"}
DEFAULT_OPSET = 17

# Above this many bytes of weights an ONNX file cannot hold them inline (protobuf's 2 GiB limit).
_INLINE_WEIGHT_LIMIT = 1_800_000_000

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


@dataclass(frozen=True)
class ExportResult:
    """What one export produced and how long it took."""

    path: Path
    wrapper: str
    exporter: str
    opset: int
    requested_outputs: tuple[str, ...]  # names passed to the exporter; the file's own are in graph_signature
    seconds: float
    warnings: tuple[str, ...]  # "Category: first line", each once, in order of first appearance
    tracer_warnings: int  # TracerWarnings raised while tracing; trace_hazards() says where
    recipe: str | None = None  # set by export/recipes.py's export_recipe


def make_wrapper(model: torch.nn.Module, wrapper: str) -> torch.nn.Module:
    """The module handed to the exporter for ``wrapper`` ("pooled", "first", "all" or "tuple")."""
    from pytest_qwen3vl.export.wrappers import WRAPPERS

    choose("wrapper", wrapper, tuple(WRAPPERS))
    return WRAPPERS[wrapper](model)


def skip_flag_for(wrapper: str) -> bool | None:
    """The builder sets ``_skip_deepstack_export`` for its exports; "all" and "stacked" trace the model
    as it is (flag absent), since they exist to keep DeepStack."""
    return None if wrapper in ("all", "stacked") else True


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Force ``_attn_implementation = "eager"`` on every config the model's modules read, then restore.

    The attention modules read ``self.config._attn_implementation`` at forward time; in
    transformers 4.57 they share the model's config, but a model put together by hand may hold
    copies, so each distinct config object is switched.
    """
    configs: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            configs.setdefault(id(config), config)
    saved = [(config, config._attn_implementation) for config in configs.values()]
    try:
        for config, _ in saved:
            config._attn_implementation = "eager"
        yield
    finally:
        for config, value in reversed(saved):
            config._attn_implementation = value


@contextlib.contextmanager
def export_mode(model: torch.nn.Module, *, skip_deepstack: bool | None) -> Iterator[None]:
    """The model as the builder exports it: eager attention and the DeepStack flag (None: absent)."""
    with eager_attention(model), deepstack_export_flag(model, skip_deepstack):
        yield


def output_names(
    model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, wrapper: str,
    prefix: str = BUILDER_DEEPSTACK_PREFIX,
) -> list[str]:
    """Names for the exporter: ``pooled_embeds``, then ``<prefix><i>`` for each traced DeepStack tensor.

    For "all" the count is what the model emits under tracing (modified files may emit none), found
    by tracing it once on the smallest grid (one image of 2x2 merge blocks); call it in export mode.
    For "stacked" the second output is ``deepstack_features``. For "first" and "tuple" only the first
    output is named: the tuple's others keep the exporter's names.
    """
    if wrapper == "stacked":
        return [POOLED_OUTPUT, STACKED_OUTPUT]
    if wrapper != "all":
        return [POOLED_OUTPUT]
    return [POOLED_OUTPUT] + [f"{prefix}{i}" for i in range(traced_deepstack_count(model, pixel_values))]


def traced_deepstack_count(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """How many DeepStack tensors the model emits under ``torch.jit.trace`` (in its current mode).

    Traced once on the smallest grid, one image of 2x2 merge blocks, so it costs little at any size.
    """
    import torch

    merge = int(getattr(model, "spatial_merge_size", 2))
    probe_grid = torch.tensor([[1, merge, merge]], dtype=torch.int64)
    probe_pixels = torch.zeros(merge * merge, pixel_values.shape[1], dtype=pixel_values.dtype)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(make_wrapper(model, "all"), (probe_pixels, probe_grid), check_trace=False)
        outputs = traced(probe_pixels, probe_grid)
    return len(outputs) - 1


def export_vision(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    wrapper: str = "pooled",
    exporter: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    deepstack_prefix: str = BUILDER_DEEPSTACK_PREFIX,
) -> ExportResult:
    """Export the vision encoder to ``path`` (written atomically) and report how it went.

    ``wrapper``: "pooled" (the merged embeddings, flag set), "first" (the report's ``outputs[0]``,
    flag set: the pre-merger states on transformers 5.x), "all" (merged and every DeepStack tensor,
    named ``<deepstack_prefix><i>``, flag absent), "stacked" (merged and one [D, N, H]
    ``deepstack_features``, flag absent) or "tuple" (the raw output, flag set). ``exporter``: "torchscript"
    (``dynamo=False``; its deprecation warning is captured in the result) or "dynamo".
    Raises ``ExportFailed`` (``ExporterUnavailable`` when the exporter cannot run here).
    """
    choose("exporter", exporter, EXPORTER_NAMES)
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise ExporterUnavailable(exporter, "ModuleNotFoundError: the dynamo exporter needs onnxscript (not installed)")
    target = Path(path)
    module = make_wrapper(model, wrapper)
    started = time.perf_counter()
    with (
        export_mode(model, skip_deepstack=skip_flag_for(wrapper)),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        names = output_names(model, pixel_values, grid_thw, wrapper, deepstack_prefix)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _run_exporter(module, (pixel_values, grid_thw), staging / target.name, exporter, opset, names)
            _publish(staging, target, exporter)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        path=target,
        wrapper=wrapper,
        exporter=exporter,
        opset=opset,
        requested_outputs=tuple(names),
        seconds=time.perf_counter() - started,
        warnings=tuple(dict.fromkeys(_warning_line(w) for w in caught if not _is_tracer_warning(w))),
        tracer_warnings=sum(map(_is_tracer_warning, caught)),
    )


def _run_exporter(
    module: torch.nn.Module, args: tuple[Any, ...], path: Path, exporter: str, opset: int, names: list[str]
) -> None:
    """One ``torch.onnx.export`` call; any exception becomes ``ExportFailed`` with a one-line summary."""
    import torch

    dynamic_axes = {**INPUT_AXES, **{name: STACKED_AXIS if name == STACKED_OUTPUT else OUTPUT_AXIS for name in names}}
    common: dict[str, Any] = {
        "input_names": list(INPUT_NAMES),
        "output_names": names,
        "dynamic_axes": dynamic_axes,
        "opset_version": opset,
    }
    chatter = io.StringIO()  # the dynamo exporter prints its progress and graph dumps
    try:
        with torch.no_grad():
            if exporter == "torchscript":
                torch.onnx.export(module, args, str(path), dynamo=False, do_constant_folding=True, **common)
            else:
                weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
                with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), quiet_logging():
                    torch.onnx.export(
                        module, args, str(path), dynamo=True, verbose=False,
                        external_data=weight_bytes > _INLINE_WEIGHT_LIMIT, **common,
                    )
    except (OSError, MemoryError):
        raise  # the machine's fault (a full disk, no memory): no verdict on the model, never remembered
    except Exception as exc:
        details = "".join(traceback.format_exception(exc)) + chatter.getvalue()
        raise ExportFailed(exporter, failure_summary(exc), details) from exc


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Mute log records up to WARNING: torch's exporter logs its progress on handlers bound to stderr."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _publish(staging: Path, target: Path, exporter: str) -> None:
    """Move the exported file from ``staging`` to ``target`` by rename, so no reader sees half a file.

    A file too large for inline weights comes with external data files (one per tensor from the
    TorchScript exporter): they are gathered into ``<name>.data``, which is moved first.
    """
    exported = staging / target.name
    if not exported.is_file():
        raise ExportFailed(exporter, f"the exporter wrote no file {target.name}")
    if [p.name for p in staging.iterdir()] == [target.name]:
        os.replace(exported, target)
        return
    import onnx

    model = onnx.load(str(exported))
    gathered = staging / "gathered"
    gathered.mkdir()
    data_name = f"{target.name}.data"
    onnx.save_model(
        model, str(gathered / target.name), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    if (gathered / data_name).is_file():  # tensors under 1 KiB stay inline
        os.replace(gathered / data_name, target.parent / data_name)
    os.replace(gathered / target.name, target)


def _is_tracer_warning(message: warnings.WarningMessage) -> bool:
    import torch

    return issubclass(message.category, torch.jit.TracerWarning)


def _warning_line(message: warnings.WarningMessage) -> str:
    text = str(message.message).strip().splitlines()
    return f"{message.category.__name__}: {text[0] if text else ''}"


def failure_summary(exc: BaseException) -> str:
    """One line for an exception chain: root class, its first line, and where the model code raised it.

    The root is the innermost cause (``GuardOnDataDependentSymNode`` inside torch.onnx's
    ``TorchExportError``), since the outer exceptions only say which export step failed.
    """
    root = exc
    while (nxt := root.__cause__ or (None if root.__suppress_context__ else root.__context__)) is not None:
        root = nxt
    text = _ANSI.sub("", str(root))
    first = next((" ".join(line.split()) for line in text.splitlines() if line.strip()), "")
    summary = f"{type(root).__name__}: {first}" if first else type(root).__name__
    where = _call_site(root, text)
    return f"{summary} at {where}" if where else summary


def _call_site(root: BaseException, text: str) -> str:
    """The model function named in the message (torch.export quotes it), else the last frame of user code."""
    sites = _CALL_SITE.findall(text)
    if sites:
        file, line, function = sites[-1]
        return f"{function} ({Path(file).name}:{line})"
    frames = [f for f in traceback.extract_tb(root.__traceback__) if not _is_library_file(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    return f"{frame.name} ({Path(frame.filename).name}:{frame.lineno})"


def _is_library_file(filename: str) -> bool:
    """Frames of this plugin, the export and runtime libraries and the standard library locate nothing."""
    dirs = [str(Path(__file__).resolve().parents[1])]  # the whole plugin package
    for name in ("torch", "onnx", "onnxruntime", "onnxscript"):
        module = sys.modules.get(name)
        if module is not None and module.__file__:
            dirs.append(str(Path(module.__file__).parent))
    paths = sysconfig.get_paths()
    in_site = filename.startswith((paths["purelib"], paths["platlib"]))
    return filename.startswith(tuple(dirs)) or (not in_site and filename.startswith(paths["stdlib"]))
