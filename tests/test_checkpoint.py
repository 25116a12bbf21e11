"""A local checkpoint folder loads offline and reads only the vision tower's tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.checkpoint import shards_holding
from pytest_qwen3vl.model.configs import TEXT_PRESETS, VISION_PRESETS, resolve_config
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
from tests.conftest import RunSuite
from tests.test_claims_table import claim_line


@pytest.fixture(scope="module")
def golden_module():
    return import_modeling_file(installed_golden_path(), "golden")


@pytest.fixture(scope="module")
def source_state(golden_module) -> dict[str, torch.Tensor]:
    spec = resolve_config("tiny", Path("."))
    return {k: v.contiguous() for k, v in build_golden(golden_module, spec, seed=7).state_dict().items()}


def write_config(folder: Path) -> None:
    config = {"model_type": "qwen3_vl", "vision_config": VISION_PRESETS["tiny"], "text_config": TEXT_PRESETS["tiny"]}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def sharded(tmp_path: Path, source_state: dict[str, torch.Tensor]) -> Path:
    """Two vision shards, one language-model shard that is not even a valid file, and an index."""
    blocks = {f"model.visual.{k}": v for k, v in source_state.items() if k.startswith("blocks.")}
    rest = {f"model.visual.{k}": v for k, v in source_state.items() if not k.startswith("blocks.")}
    save_file(blocks, str(tmp_path / "model-00001-of-00003.safetensors"))
    save_file(rest, str(tmp_path / "model-00002-of-00003.safetensors"))
    (tmp_path / "model-00003-of-00003.safetensors").write_bytes(b"language model shard: never opened")
    weight_map = {name: "model-00001-of-00003.safetensors" for name in blocks}
    weight_map |= {name: "model-00002-of-00003.safetensors" for name in rest}
    weight_map["model.language_model.embed_tokens.weight"] = "model-00003-of-00003.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    write_config(tmp_path)
    return tmp_path


def test_sharded_checkpoint_reads_only_vision_shards(sharded: Path, golden_module, source_state) -> None:
    spec = resolve_config(str(sharded), Path("/"))
    assert spec.checkpoint == sharded
    assert sorted(p.name for p in shards_holding(sharded)) == ["model-00001-of-00003.safetensors",
                                                             "model-00002-of-00003.safetensors"]
    loaded = build_golden(golden_module, spec, seed=0).state_dict()
    assert loaded.keys() == source_state.keys()
    assert all(torch.equal(loaded[k], source_state[k]) for k in source_state)


def test_single_file_checkpoint_skips_language_tensors(tmp_path: Path, golden_module, source_state) -> None:
    tensors = {f"model.visual.{k}": v for k, v in source_state.items()}
    tensors["model.language_model.embed_tokens.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    write_config(tmp_path)
    loaded = build_golden(golden_module, resolve_config(str(tmp_path), Path("/")), seed=0).state_dict()
    assert all(torch.equal(loaded[k], source_state[k]) for k in source_state)


def test_checkpoint_of_another_shape_is_refused(tmp_path: Path, golden_module, source_state) -> None:
    save_file({"model.visual.merger.linear_fc2.bias": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    write_config(tmp_path)
    with pytest.raises(ConfigError, match=r"do not fit the config: size mismatch for merger\.linear_fc2\.bias"):
        build_golden(golden_module, resolve_config(str(tmp_path), Path("/")), seed=0)


def test_suite_runs_on_a_checkpoint_folder(run_suite: RunSuite, sharded: Path) -> None:
    result = run_suite("test_runtime.py", f"--qwen3vl-config={sharded}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"qwen3vl config: {sharded};*"])


def test_a_text_config_written_by_transformers_5_is_read_by_any_version(run_suite: RunSuite, tmp_path: Path) -> None:
    """A 5.x checkpoint's text config holds ``rope_parameters`` where 4.57.6 reads ``rope_theta`` and
    ``rope_scaling``: text-mrope reads it on either version (4.57.6 failed in the rotary embedding with
    "AttributeError: 'NoneType' object has no attribute 'get'")."""
    preset = TEXT_PRESETS["tiny"]
    text = {key: value for key, value in preset.items() if key not in ("rope_theta", "rope_scaling")}
    text["rope_parameters"] = {**preset["rope_scaling"], "rope_theta": preset["rope_theta"]}
    config = {"model_type": "qwen3_vl", "vision_config": VISION_PRESETS["tiny"], "text_config": text}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_suite("test_mrope.py", f"--qwen3vl-config={tmp_path / 'config.json'}")
    result.assert_outcomes(passed=4)
    assert " holds " in claim_line(result, "text-mrope")
    assert "AttributeError" not in result.stdout.str()
