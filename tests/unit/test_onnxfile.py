"""Reading a file once: its interface (inputs and outputs by name, or by a user's mapping), its weight
type, its initializers against the config's shapes, and the plain data a controller hands to workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from pytest_qwen3vl.errors import ArtefactError, SettingsError
from pytest_qwen3vl.onnxfile.interface import FileFacts, OutputMap, read_file
from pytest_qwen3vl.onnxfile.names import POOLED_OUTPUT, STACKED_OUTPUT, deepstack_index, split_outputs
from pytest_qwen3vl.onnxfile.weights import misfits, state_key
from tests.helpers import tiny_encoder


def test_the_builders_names_are_recognised(tmp_path: Path) -> None:
    facts = read_file(tiny_encoder(tmp_path / "f.onnx", ("pooled_embeds", "deepstack_2", "deepstack_0", "deepstack_1")))
    iface = facts.interface
    assert iface.recognised and iface.has_deepstack and iface.stacked is None
    assert (iface.pixels.name, iface.grid and iface.grid.name, iface.pooled and iface.pooled.name) == (
        "pixel_values", "image_grid_thw", "pooled_embeds")
    assert [p.name for p in iface.deepstack] == ["deepstack_0", "deepstack_1", "deepstack_2"]
    assert iface.pixels.text() == "pixel_values float32[num_patches, 4]"
    assert (facts.weights.name, facts.path) == ("fp32", tmp_path / "f.onnx")


def test_olives_name_and_a_stacked_deepstack_are_recognised(tmp_path: Path) -> None:
    iface = read_file(tiny_encoder(tmp_path / "f.onnx", ("image_features", STACKED_OUTPUT))).interface
    assert iface.recognised and iface.pooled and iface.pooled.name == "image_features"
    assert iface.stacked and iface.stacked.name == STACKED_OUTPUT and not iface.deepstack


def test_a_single_output_of_any_name_is_the_pooled_one(tmp_path: Path) -> None:
    iface = read_file(tiny_encoder(tmp_path / "f.onnx", ("embeds",))).interface
    assert iface.recognised and iface.pooled and iface.pooled.name == "embeds" and not iface.has_deepstack


def test_unrecognised_outputs_say_why_and_offer_a_mapping(tmp_path: Path) -> None:
    path = tiny_encoder(tmp_path / "f.onnx", ("vision_embeds", "ds_a", "ds_b"))
    iface = read_file(path).interface
    assert not iface.recognised and [p.name for p in iface.unrecognised] == ["vision_embeds", "ds_a", "ds_b"]
    assert iface.unrecognised_text().startswith(
        "outputs not recognised: vision_embeds float32[num_patches, 4], ds_a float32[num_patches, 4], "
        "ds_b float32[num_patches, 4]; expected pooled_embeds or image_features"), iface.unrecognised_text()
    assert iface.mapping_example() == "pooled=vision_embeds,deepstack=ds_a,ds_b"
    mapped = read_file(path, OutputMap.parse(iface.mapping_example())).interface
    assert mapped.recognised and mapped.pooled and mapped.pooled.name == "vision_embeds"
    assert [p.name for p in mapped.deepstack] == ["ds_a", "ds_b"]


def test_a_mapping_naming_an_output_the_file_lacks_is_an_artefact_error(tmp_path: Path) -> None:
    """The reader names the file; the settings layer puts the option's name in front."""
    path = tiny_encoder(tmp_path / "f.onnx", ("vision_embeds", "ds_a"))
    with pytest.raises(ArtefactError) as raised:
        read_file(path, OutputMap.parse("pooled=vision_embeds,deepstack=ds_a,ds_z"))
    assert str(raised.value) == f"{path}: the output mapping names ds_z, which the file does not have; " \
        "its outputs: vision_embeds, ds_a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("pooled=a", OutputMap("a")), ("pooled=a,deepstack=b,c", OutputMap("a", ("b", "c"))),
     (" deepstack = b , pooled = a ", OutputMap("a", ("b",)))],
)
def test_output_maps_parse(text: str, expected: OutputMap) -> None:
    assert OutputMap.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("deepstack=b", "'deepstack=b': name exactly one pooled output"),
     ("pooled=a,pooled=b", "'pooled=a,pooled=b': name exactly one pooled output"),
     ("pooled=a,colour=b", "'pooled=a,colour=b': unknown key 'colour' (pooled, deepstack)"),
     ("a", "'a': expected pooled=NAME[,deepstack=NAME,NAME...]")],
)
def test_bad_output_maps_are_settings_errors_without_the_option_name(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        OutputMap.parse(text)
    assert str(raised.value) == message


def test_what_was_read_reaches_a_worker_as_plain_json(tmp_path: Path) -> None:
    """The controller reads each file once and hands its facts on: JSON there, the same facts back."""
    weight = numpy_helper.from_array(np.ones((2, 4), np.float16), "model.blocks.0.mlp.weight")
    facts = read_file(tiny_encoder(tmp_path / "f.onnx", ("pooled_embeds", "deepstack_features"),
                                   initializers=[weight]))
    assert FileFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    assert ("model.blocks.0.mlp.weight", (2, 4)) in facts.initializers
    assert facts.weights.name == "fp16" and "FLOAT16" in facts.weights.evidence, facts.weights


def test_a_file_that_is_no_onnx_model_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "text.onnx"
    path.write_text("not a model")
    with pytest.raises(ArtefactError, match=rf"^{re.escape(str(path))}: not an ONNX model \(\w+\)$"):
        read_file(path)


def test_initializers_that_do_not_fit_the_configs_shapes() -> None:
    shapes = {"blocks.0.attn.qkv.weight": (96, 32), "patch_embed.proj.weight": (32, 3, 2, 16, 16)}
    initializers = [
        ("model.blocks.0.attn.qkv.weight", (32, 96)),  # transposed: fits
        ("model.patch_embed.proj.weight", (64, 3, 2, 16, 16)),
        ("onnx::MatMul_7", (5, 5)),  # no golden tensor of that name: not judged
    ]
    assert misfits(initializers, shapes) == [
        "model.patch_embed.proj.weight is [64, 3, 2, 16, 16], "
        "the config's patch_embed.proj.weight is [32, 3, 2, 16, 16]"
    ]
    assert state_key("model.visual.blocks.0.attn.qkv.weight", shapes) == "blocks.0.attn.qkv.weight"
    assert state_key("blocks.0.attn.qkv", shapes) is None


def test_split_outputs_reads_either_deepstack_layout() -> None:
    pooled, first, second = np.zeros(1), np.ones(1), np.full(1, 2.0)
    split = {POOLED_OUTPUT: pooled, "deepstack_features_1": second, "deepstack_features_0": first}
    assert [x.tolist() for x in split_outputs(split)[1]] == [[1.0], [2.0]]
    stacked = {POOLED_OUTPUT: pooled, STACKED_OUTPUT: np.stack([first, second])}
    assert [x.tolist() for x in split_outputs(stacked)[1]] == [[1.0], [2.0]]
    assert split_outputs({POOLED_OUTPUT: pooled})[1] == []
    assert [deepstack_index(n) for n in ("deepstack_3", "deepstack_features_2", "deepstack_features", "x_1")] == [
        3, 2, None, None]


def test_fp32_and_quantized_weights_are_told_apart() -> None:
    from onnx import helper

    from pytest_qwen3vl.onnxfile.weights import weight_type

    def model(elem: int, ops: tuple[str, ...] = ()) -> object:
        init = helper.make_tensor("w", elem, [64], [0] * 64)
        nodes = [helper.make_node(op, ["w"], [f"o{i}"]) for i, op in enumerate(ops)]
        return helper.make_model(helper.make_graph(nodes, "g", [], [], [init]))

    assert weight_type(model(TensorProto.FLOAT)).name == "fp32"
    assert weight_type(model(TensorProto.INT8)).name == "quantized"
    assert weight_type(model(TensorProto.FLOAT, ("DequantizeLinear",))).name == "quantized"
    assert weight_type(model(TensorProto.FLOAT, ("Cast",))).name == "fp32"  # Cast is no evidence
