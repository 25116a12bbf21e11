"""An onnxruntime-genai model folder for Qwen3-VL, made from a checkpoint folder.

The folder holds what genai 0.18's multimodal pipeline reads: the text decoder written by genai's
own builder (fp32, CPU, ``exclude_embeds``, so it takes ``inputs_embeds``), a vision file (ours or
the user's, used as it is: its output name goes into the config), ``embedding.onnx`` (token
embeddings with the image features put in order at the image-pad positions), ``genai_config.json``
and ``processor_config.json`` (ort-extensions' image processor, from the checkpoint's
``preprocessor_config.json``) and the tokenizer files the builder copies.

Traps this module handles: the builder writes ``"type": "qwen3vl"``, which the runtime rejects
(``qwen3_vl`` works); it writes no embedding or vision section and no processor config; genai
joins a vision file name to the folder as text, so another file is named by a relative path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError, GenaiFolderError, child_failure
from pytest_qwen3vl.model.checkpoint import checkpoint_weights
from pytest_qwen3vl.model.grids import DEFAULT_GRID, Grid
from pytest_qwen3vl.model.write_checkpoint import staged_folder
from pytest_qwen3vl.onnxfile.names import INPUT_NAMES

if TYPE_CHECKING:
    from pytest_qwen3vl.onnxfile.interface import Interface

GENAI_INSTALL = "pip install pytest-qwen3vl[genai]"
# Modules the folder and the runtime need; onnx_ir is imported by genai's builder without being
# one of its dependencies.
GENAI_MODULES = ("onnxruntime_genai", "onnx_ir", "tokenizers")
MODEL_TYPE = "qwen3_vl"
VISION_FILE = "vision.onnx"
EMBEDDING_FILE = "embedding.onnx"
PROCESSOR_FILE = "processor_config.json"
CONFIG_FILE = "genai_config.json"
EMBEDDING_OPSET = 17

Progress = Callable[[str], None]


def genai_missing() -> str | None:
    """Why the genai pipeline cannot run here (a missing module and how to install it), or None."""
    absent = [name for name in GENAI_MODULES if importlib.util.find_spec(name) is None]
    return f"{', '.join(absent)} not installed: {GENAI_INSTALL}" if absent else None


def make_genai_folder(checkpoint: Path, out: Path, *, vision: Path | None = None, grid: Grid | None = None,
                      seed: int = 0, progress: Progress | None = None) -> Path:
    """Write the genai folder ``out`` (absent or empty) for ``checkpoint``; return it.

    ``vision``: a vision ONNX file to copy in; without it the checkpoint's vision tower is exported
    with ``export_vision`` (pooled wrapper) at ``grid`` on inputs drawn from ``seed``.
    """
    say = progress or (lambda _message: None)
    missing = genai_missing()
    if missing:
        raise GenaiFolderError(missing)
    checkpoint = checkpoint.resolve()
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        if not (checkpoint / name).is_file():
            raise ConfigError(f"{checkpoint}: no {name} (make one with qwen3vl-checkpoint)")
    checkpoint_weights(checkpoint)  # weights that cannot be read are one line here, not the builder's failure
    external = check_vision(vision, checkpoint) if vision is not None else ()
    with staged_folder(out) as staging:
        ids = decoder_and_embedding(checkpoint, staging, say)
        if vision is None:
            say(f"exporting the checkpoint's vision tower at grid {(grid or DEFAULT_GRID).id}")
            vision_name = export_checkpoint_vision(checkpoint, staging / VISION_FILE, grid or DEFAULT_GRID, seed)
        else:
            vision_name = copy_vision(vision, external, staging)
        write_configs(staging, checkpoint, ids, vision_name)
    say(f"wrote {out}")
    return out


def run_builder(checkpoint: Path, out: Path) -> None:
    """genai's builder in a child process (``runtimes/genai_builder.py`` bridges the transformers version)."""
    with tempfile.TemporaryDirectory(prefix="qwen3vl-genai-builder.") as cache:
        command = [
            sys.executable, "-m", "pytest_qwen3vl.runtimes.genai_builder", "-i", str(checkpoint), "-o", str(out),
            "-p", "fp32", "-e", "cpu", "-c", cache, "--extra_options", "exclude_embeds=true",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out / CONFIG_FILE).is_file():
        why = child_failure(done.stderr + "\n" + done.stdout, done.returncode)
        raise GenaiFolderError(f"onnxruntime-genai's builder failed: {why}")


def special_ids(checkpoint: Path) -> dict[str, int]:
    """The image, video and vision-start token ids of the checkpoint's config.json."""
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    try:
        return {key: int(config[key]) for key in ("image_token_id", "video_token_id", "vision_start_token_id")}
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{checkpoint / 'config.json'}: no Qwen3-VL token ids") from None


def embedding_table(checkpoint: Path) -> Any:
    """The language model's token embedding matrix (float32 numpy) from the checkpoint's weights."""
    from pytest_qwen3vl.model.checkpoint import read_tensors

    name = "model.language_model.embed_tokens.weight"
    found = read_tensors(checkpoint_weights(checkpoint), (name,))
    if name not in found:
        raise ConfigError(f"{checkpoint}: no {name} (a --vision-only checkpoint has no language model)")
    return found[name].float().numpy()


def embedding_model(table: Any, image_token_id: int, *, reverse_images: bool = False) -> Any:
    """The embedding graph: input_ids [batch, seq], image_features [n, hidden] -> inputs_embeds.

    The k-th image pad (counted over the flattened batch, from 1) takes feature row k-1; a zero row
    in front of the features makes zero features work (decode steps, text-only prompts).
    ``reverse_images`` puts them in reverse order: the self-tests' wrong embedding model.
    """
    import numpy as np
    from onnx import TensorProto, checker, helper, numpy_helper

    hidden = int(table.shape[1])
    feature_rows = "image_features"
    nodes = []
    if reverse_images:
        nodes.append(helper.make_node("Slice", ["image_features", "minus_one", "before_first", "axis0_list",
                                                "minus_one"], ["reversed_features"]))
        feature_rows = "reversed_features"
    nodes += [
        helper.make_node("Gather", ["embed_table", "input_ids"], ["token_embeds"], axis=0),
        helper.make_node("Equal", ["input_ids", "image_token_id"], ["is_image"]),
        helper.make_node("Reshape", ["is_image", "minus_one"], ["is_image_flat"]),
        helper.make_node("Cast", ["is_image_flat"], ["is_image_int"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["is_image_int", "axis0"], ["running"]),
        helper.make_node("Mul", ["running", "is_image_int"], ["row_flat"]),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Reshape", ["row_flat", "ids_shape"], ["row"]),
        helper.make_node("Concat", ["zero_row", feature_rows], ["padded_features"], axis=0),
        helper.make_node("Gather", ["padded_features", "row"], ["image_embeds"], axis=0),
        helper.make_node("Unsqueeze", ["is_image", "last_axis"], ["is_image_3d"]),
        helper.make_node("Where", ["is_image_3d", "image_embeds", "token_embeds"], ["inputs_embeds"]),
    ]
    initializers = [
        numpy_helper.from_array(np.asarray(table, dtype=np.float32), "embed_table"),
        numpy_helper.from_array(np.array(image_token_id, dtype=np.int64), "image_token_id"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], dtype=np.int64), "before_first"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0_list"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.zeros((1, hidden), dtype=np.float32), "zero_row"),
    ]
    graph = helper.make_graph(
        nodes, "qwen3vl_embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
         helper.make_tensor_value_info("image_features", TensorProto.FLOAT, ["num_image_tokens", hidden])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT,
                                       ["batch_size", "sequence_length", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EMBEDDING_OPSET)], ir_version=8)
    checker.check_model(model)
    return model


def write_embedding(checkpoint: Path, path: Path, image_token_id: int, *, reverse_images: bool = False) -> None:
    import onnx

    onnx.save(embedding_model(embedding_table(checkpoint), image_token_id, reverse_images=reverse_images), str(path))


def export_checkpoint_vision(checkpoint: Path, path: Path, grid: Grid, seed: int) -> str:
    """Export the checkpoint's vision tower (golden file, pooled wrapper) to ``path``; return its name."""
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from pytest_qwen3vl.export.builder import export_vision
    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.inputs import make_inputs

    spec = resolve_config(str(checkpoint), checkpoint)
    model = build_golden(modeling_qwen3_vl, spec, seed)
    export_vision(model, *make_inputs(grid, spec, seed).args, path)
    return path.name


def check_vision(vision: Path, checkpoint: Path) -> tuple[str, ...]:
    """Refuse, in one line, a ``--vision`` file genai's folder could not use with this checkpoint: not a
    file, not ONNX, external data missing or short, inputs named otherwise than the config feeds
    (``pixel_values``, ``image_grid_thw``), no recognised pooled output, or pixel columns and output width
    other than the checkpoint's vision config. Returns its external data files, to be copied with it."""
    from pytest_qwen3vl.onnxfile.interface import read_file

    if not vision.is_file():
        raise ConfigError(f"--vision: no such file: {vision}")
    facts = read_file(vision)
    interface = facts.interface
    names = tuple(port.name for port in interface.inputs)
    if sorted(names) != sorted(INPUT_NAMES):
        raise ConfigError(f"--vision: {vision} takes {', '.join(names) or 'no input'}; genai's config feeds "
                          f"{', '.join(INPUT_NAMES)}: not a Qwen3-VL vision encoder as genai runs it")
    if interface.pooled is None:
        raise ConfigError(f"--vision: {vision}: {interface.unrecognised_text()}")
    vision_config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("vision_config", {})
    columns = (int(vision_config.get("in_channels", 3)) * int(vision_config.get("temporal_patch_size", 2))
               * int(vision_config.get("patch_size", 16)) ** 2)
    width = vision_config.get("out_hidden_size")
    if wrong := misfit(interface, columns, int(width) if width is not None else None):
        port, found, what, expected = wrong
        raise ConfigError(f"--vision: {vision}: {port} has {found} {what}; {checkpoint / 'config.json'} "
                          f"says {expected}: not this checkpoint's vision encoder")
    return facts.external


def misfit(interface: Interface, columns: int | None, width: int | None) -> tuple[str, int, str, int] | None:
    """The first of a vision file's pixel values per patch and embedding width that is fixed and differs
    from ``columns`` or ``width`` (None: not known): its port, the size found, what it is, the size wanted."""
    for port, axis, expected, what in ((interface.pixels, 1, columns, "pixel values per patch"),
                                       (interface.pooled, -1, width, "embedding width (out_hidden_size)")):
        if port is None or not port.dims or len(port.dims) != 2:
            continue
        found = port.dims[axis]
        if isinstance(found, int) and expected is not None and found != expected:
            return port.name, found, what, expected
    return None


def copy_vision(vision: Path, external: tuple[str, ...], out: Path) -> str:
    """Copy the user's vision file and the external data files it names into the folder, beside it."""
    for name in (vision.name, *external):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vision.parent / name, out / name)
    return vision.name


def vision_output(path: Path) -> str:
    """The vision file's first graph output: genai's config maps ``image_features`` to it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not model.graph.output:
        raise GenaiFolderError(f"{path}: the graph has no output")
    return str(model.graph.output[0].name)


def vision_section(filename: str, output: str, inputs: tuple[str, str] = INPUT_NAMES) -> dict[str, Any]:
    """genai_config.json's ``vision`` section for a file whose image features are ``output`` and whose
    pixel and grid inputs are ``inputs``."""
    return {
        "filename": filename,
        "config_filename": PROCESSOR_FILE,
        "spatial_merge_size": 2,
        "patch_size": 16,
        "inputs": dict(zip(INPUT_NAMES, inputs, strict=True)),
        "outputs": {"image_features": output},
    }


def vision_overlay(folder: Path, vision: Path, output: str, inputs: tuple[str, str]) -> str:
    """A genai config overlay (JSON) that makes the folder use another vision file, wherever it is, its
    ``output`` as the image features and ``inputs`` as the pixels and the grid.

    genai appends the file name to the folder's path as text, so the name is made relative.
    """
    relative = os.path.relpath(vision.resolve(), folder.resolve())
    return json.dumps({"model": {"vision": vision_section(relative, output, inputs)}})


def processor_config(checkpoint: Path) -> dict[str, Any]:
    """ort-extensions' Qwen3-VL image processor with the checkpoint's pixel budget, patch and mean/std."""
    from pytest_qwen3vl.model.references import ProcessorSettings

    pre = ProcessorSettings.of(json.loads((checkpoint / "preprocessor_config.json").read_text(encoding="utf-8")))
    patch, merge = pre.patch_size, pre.merge_size

    def op(name: str, kind: str, **attrs: Any) -> dict[str, Any]:
        return {"operation": {"name": name, "type": kind, **({"attrs": attrs} if attrs else {})}}

    return {"processor": {"name": "qwen3_vl_image_processor", "transforms": [
        op("decode_image", "DecodeImage", color_space="RGB"),
        op("convert_to_rgb", "ConvertRGB"),
        # width/height are required keys; smart_resize ignores them.
        op("resize", "Resize", width=512, height=512, smart_resize=1, min_pixels=pre.min_pixels,
           max_pixels=pre.max_pixels, patch_size=patch, merge_size=merge),
        op("rescale", "Rescale", rescale_factor=1.0 / 255),
        op("normalize", "Normalize", mean=list(pre.image_mean), std=list(pre.image_std), qwen3_vl=1),
        op("patch_image", "PatchImage", patch_size=patch, temporal_patch_size=pre.temporal_patch_size,
           merge_size=merge),
    ]}}


def write_configs(out: Path, checkpoint: Path, ids: dict[str, int], vision_name: str | None) -> None:
    """Complete the builder's genai_config.json and write processor_config.json.

    ``vision_name`` None leaves the vision file to a config overlay (the test session's folder).
    """
    path = out / CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8"))
    model = config["model"]
    model["type"] = MODEL_TYPE
    model.update(ids)
    model["embedding"] = {
        "filename": EMBEDDING_FILE,
        "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
        "outputs": {"inputs_embeds": "inputs_embeds"},
    }
    output = vision_output(out / vision_name) if vision_name else "pooled_embeds"
    model["vision"] = vision_section(vision_name or VISION_FILE, output)
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    (out / PROCESSOR_FILE).write_text(json.dumps(processor_config(checkpoint), indent=4) + "\n", encoding="utf-8")


def build_session_folder(checkpoint: Path, out: Path) -> None:
    """The folder the test session shares: no vision file of its own, each case overlays one."""
    missing = genai_missing()
    if missing:
        raise GenaiFolderError(missing)
    ids = decoder_and_embedding(checkpoint.resolve(), out, lambda _message: None)
    write_configs(out, checkpoint, ids, None)


def decoder_and_embedding(checkpoint: Path, out: Path, say: Progress) -> dict[str, int]:
    """What every genai folder holds: the text decoder by genai's builder and the embedding model;
    returns the checkpoint's special token ids."""
    say("running onnxruntime-genai's model builder (fp32, cpu, exclude_embeds)")
    run_builder(checkpoint, out)
    say("writing embedding.onnx")
    ids = special_ids(checkpoint)
    write_embedding(checkpoint, out / EMBEDDING_FILE, ids["image_token_id"])
    return ids
