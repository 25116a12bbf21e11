"""Unit tests of option parsing: grids, seeds, runtimes, config presets and config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_qwen3vl.errors import ConfigError, SettingsError
from pytest_qwen3vl.model.configs import VISION_PRESETS, resolve_config
from pytest_qwen3vl.model.grids import SWEEP, Grid, other_grid
from pytest_qwen3vl.plugin.settings import parse_grids, parse_lock_timeout, parse_runtimes, parse_seed
from pytest_qwen3vl.runtimes.registry import RuntimeChoice


def test_grid_parses_one_image() -> None:
    grid = Grid.parse("1,24,24")
    assert grid.images == ((1, 24, 24),)
    assert (grid.id, grid.text, grid.num_patches) == ("1x24x24", "1,24,24", 576)


def test_grid_parses_several_images_joined_with_plus() -> None:
    grid = Grid.parse(" 1, 24,24 + 2,20,20 ")
    assert grid.images == ((1, 24, 24), (2, 20, 20))
    assert grid.id == "1x24x24+2x20x20"
    assert grid.num_patches == 576 + 800


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty grid"),
        ("1,24", "not three positive integers"),
        ("1,24,24,1", "not three positive integers"),
        ("a,b,c", "not three positive integers"),
        ("1,-24,24", "not three positive integers"),
        ("0,24,24", "must be positive"),
        ("1,24,24+", "not three positive integers"),
    ],
)
def test_grid_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Grid.parse(text)


def test_grid_checks_merge_size() -> None:
    Grid.parse("1,24,20").check_merge(2)
    with pytest.raises(SettingsError, match="divisible by the merge size 2"):
        Grid.parse("1,24,23").check_merge(2)


def test_duplicate_grids_collapse() -> None:
    assert [g.id for g in parse_grids(["1,24,24", "1,20,20", "1,24,24"])] == ["1x24x24", "1x20x20"]


@pytest.mark.parametrize(("value", "expected"), [("0", 0), (" 7 ", 7), (3, 3)])
def test_seed_parses(value: object, expected: int) -> None:
    assert parse_seed(value) == expected


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_seed_rejects(value: str) -> None:
    with pytest.raises(SettingsError):
        parse_seed(value)


@pytest.mark.parametrize(("value", "expected"), [("35", 35.0), (" 0.5 ", 0.5), (1800, 1800.0)])
def test_lock_timeout_parses(value: str | float, expected: float) -> None:
    assert parse_lock_timeout(value) == expected


@pytest.mark.parametrize("value", ["x", "0", "-3", "nan", "inf"])
def test_lock_timeout_rejects_what_would_never_end_or_never_wait(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^--qwen3vl-lock-timeout=.*: expected a positive number of seconds$"):
        parse_lock_timeout(value)


def test_tiny_keeps_the_4b_interface() -> None:
    tiny, big = VISION_PRESETS["tiny"], VISION_PRESETS["4b"]
    for key in ("in_channels", "patch_size", "temporal_patch_size", "spatial_merge_size",
                "num_position_embeddings", "out_hidden_size"):
        assert tiny[key] == big[key], key
    assert len(tiny["deepstack_visual_indexes"]) == len(big["deepstack_visual_indexes"])
    assert max(tiny["deepstack_visual_indexes"]) < tiny["depth"]
    assert tiny["hidden_size"] % tiny["num_heads"] == 0


@pytest.mark.parametrize("name", ["tiny", "2b", "4b", "8b", "4B"])
def test_presets_resolve(name: str, tmp_path: Path) -> None:
    spec = resolve_config(name, tmp_path)
    assert spec.name == name.lower()
    assert spec.text is not None and spec.text["head_dim"] == 128


def test_config_json_of_whole_model_and_of_vision_tower(tmp_path: Path) -> None:
    vision = dict(VISION_PRESETS["tiny"], depth=3, deepstack_visual_indexes=[0, 1, 2])
    (tmp_path / "whole.json").write_text(json.dumps({"vision_config": vision, "text_config": {"head_dim": 64}}))
    (tmp_path / "vision.json").write_text(json.dumps(vision))
    whole = resolve_config("whole.json", tmp_path)
    alone = resolve_config(str(tmp_path / "vision.json"), Path("/"))
    assert whole.vision == alone.vision == vision
    assert whole.text == {"head_dim": 64} and alone.text is None


def test_config_folder_means_its_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": VISION_PRESETS["2b"]}))
    assert resolve_config(str(tmp_path), Path("/")).vision["out_hidden_size"] == 2048


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "no JSON object"), ('{"vision_config": {"depth": 2}}', "lacks")],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        resolve_config("config.json", tmp_path)


def test_unknown_config_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a preset"):
        resolve_config("16b", tmp_path)


def test_sweep_names_the_processor_grids_once_each() -> None:
    grids = parse_grids(["1,24,24", "sweep", "SWEEP"])
    assert grids[0].id == "1x24x24" and len(grids) == len(SWEEP) == len(set(grids))
    for grid in grids:
        grid.check_merge(2)
        assert all(h * w >= 256 for _, h, w in grid.images), f"{grid.id}: below the processor's pixel budget"
    ids = {grid.id for grid in grids}
    assert {"1x16x40", "1x40x16", "2x16x16", "1x16x16+1x16x16", "1x24x24+1x16x32", "1x18x22"} <= ids


def test_other_grid_moves_the_first_image_down_above_the_floor_else_up() -> None:
    assert other_grid(Grid.parse("1,24,24+1,16,16"), 4) == Grid.parse("1,20,20+1,16,16")
    assert other_grid(Grid.parse("2,4,40"), 4) == Grid.parse("2,8,36")
    assert other_grid(Grid.parse("1,20,24"), 4, floor=16) == Grid.parse("1,24,20")


def test_runtimes_default_to_onnxruntime_and_collapse_duplicates() -> None:
    assert parse_runtimes([]) == (RuntimeChoice("onnxruntime"),)
    chosen = parse_runtimes(["openvino:f16", "OpenVINO:F16", "onnxruntime", "openvino"])
    assert [r.text for r in chosen] == ["openvino:f16", "onnxruntime", "openvino"]
    with pytest.raises(SettingsError, match=r"^--qwen3vl-runtime: openvino setting must be one of f32, bf16, f16, "
                                            r"not 'fp16'$"):
        parse_runtimes(["openvino:fp16"])

