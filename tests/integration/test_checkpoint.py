"""A checkpoint folder is read in every format transformers saves (safetensors or ``pytorch_model.bin``,
sharded or not), or refused in one line when its weights cannot be read; never replaced by seeded
weights. Folders are written by transformers' own ``save_pretrained`` of a small whole model.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pytest_qwen3vl.cli import export_main
from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.checkpoint import (
    LANGUAGE_PREFIXES,
    VISION_PREFIXES,
    checkpoint_weights,
    load_language_weights,
)
from pytest_qwen3vl.model.configs import (
    TEXT_PRESETS,
    VISION_PRESETS,
    ModelSpec,
    resolve_config,
    weights_origin,
    whole_config,
)
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.model.outputs import merged
from pytest_qwen3vl.model.write_checkpoint import write_checkpoint
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
from tests.conftest import RunSuite
from tests.helpers import Interrupted, claim_row, lfs_pointer, stop_at

# Cheap enough to run again under transformers 5, which saves only safetensors itself.
pytestmark = pytest.mark.qwen3vl_versions

# The tiny preset's vision tower (3.2 MB in float32) under a one-layer language model of its width.
SMALL = ModelSpec(
    "small",
    {**VISION_PRESETS["tiny"], "out_hidden_size": 64},
    {**TEXT_PRESETS["tiny"], "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 64},
)
FORMATS = {"safetensors": ("safetensors", False), "safetensors-sharded": ("safetensors", True),
           "bin": ("bin", False), "bin-sharded": ("bin", True)}
SHARD_SIZE, SHARD_BYTES = "1MB", 10**6


@pytest.fixture(scope="module")
def golden_module():
    return import_modeling_file(installed_golden_path(), "golden")


def whole_model(seed: int) -> torch.nn.Module:
    from transformers import Qwen3VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3VLForConditionalGeneration._from_config(whole_config(SMALL), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return whole_model(3)


def save(model: torch.nn.Module, folder: Path, kind: str, sharded: bool) -> Path:
    """The folder a user's save makes: ``save_pretrained``; for ``.bin`` where it writes only safetensors
    (transformers 5 dropped ``safe_serialization``), ``torch.save`` of the state dict and, sharded, the
    index 4.x writes beside its shards."""
    shard_size = SHARD_SIZE if sharded else "1GB"
    can_save_bin = "safe_serialization" in inspect.signature(model.save_pretrained).parameters
    if kind == "safetensors" or can_save_bin:
        options = {"safe_serialization": False} if kind == "bin" else {}
        model.save_pretrained(folder, max_shard_size=shard_size, **options)
        return folder
    model.config.save_pretrained(folder)
    state = model.state_dict()
    if not sharded:
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    shards: list[dict[str, torch.Tensor]] = [{}]
    for name, tensor in state.items():  # in order, a new shard where the next tensor would pass the size
        if shards[-1] and sum(t.nbytes for t in shards[-1].values()) + tensor.nbytes > SHARD_BYTES:
            shards.append({})
        shards[-1][name] = tensor
    weight_map = {}
    for number, shard_state in enumerate(shards, 1):
        shard = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        torch.save(shard_state, folder / shard)
        weight_map |= dict.fromkeys(shard_state, shard)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture(scope="module")
def folders(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder per format, saved once; tests that damage one work on a copy (``copy_of``)."""
    return {case: save(model, tmp_path_factory.mktemp(case), *FORMATS[case]) for case in FORMATS}


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


@pytest.mark.parametrize("case", FORMATS)
def test_golden_gets_the_folders_weights_in_every_format(case: str, folders, model, golden_module) -> None:
    folder = folders[case]
    sharded = FORMATS[case][1]
    assert (len(weight_files(folder)) > 1) == sharded, [p.name for p in weight_files(folder)]
    spec = resolve_config(str(folder), Path("/"))
    assert spec.checkpoint == folder
    expected = model.model.visual.state_dict()
    loaded = build_golden(golden_module, spec, seed=0).state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    described = f"{len(weight_files(folder))} {FORMATS[case][0]} shards" if sharded else weight_files(folder)[0].name
    assert weights_origin(spec, seed=0) == f"the checkpoint's {described}"


@pytest.mark.parametrize("case", ["safetensors-sharded", "bin-sharded"])
def test_language_model_is_read_from_every_format(case: str, folders, model) -> None:
    other = whole_model(4)
    load_language_weights(other, folders[case], LANGUAGE_PREFIXES[0])
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(LANGUAGE_PREFIXES)}
    loaded = other.state_dict()
    assert expected and all(torch.equal(loaded[k], v) for k, v in expected.items())


@pytest.mark.parametrize("case", ["safetensors-sharded", "bin-sharded"])
def test_only_the_shards_holding_the_tower_are_opened(case: str, folders) -> None:
    weights = checkpoint_weights(folders[case])
    vision = weights.holding(VISION_PREFIXES)
    assert 0 < len(vision) < len(weights.names)
    assert all(name.startswith("model.visual.") for names in vision.values() for name in names)


def test_the_older_layout_visual_prefix_is_read(tmp_path: Path, model, golden_module) -> None:
    state = model.model.visual.state_dict()
    save_file({f"visual.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    model.config.save_pretrained(tmp_path)
    loaded = build_golden(golden_module, resolve_config(str(tmp_path), Path("/")), seed=0).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_folder_without_weights_is_its_config_with_seeded_weights_and_says_so(tmp_path: Path, model) -> None:
    model.config.save_pretrained(tmp_path)
    spec = resolve_config(str(tmp_path), Path("/"))
    assert spec.checkpoint is None
    assert weights_origin(spec, seed=5) == f"random (seed 5): {tmp_path} holds no weights file"
    assert weights_origin(resolve_config(str(tmp_path / "config.json"), Path("/")), seed=5) == "random (seed 5)"


def truncate(path: Path, keep: int | None = None) -> None:
    """Keep the first ``keep`` bytes, by default the first half (a download cut short)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 if keep is None else keep])


def first_shard(folder: Path) -> Path:
    return weight_files(folder)[0]


def drop_a_shard(folder: Path) -> None:
    first_shard(folder).unlink()


def misplace_a_tensor(folder: Path) -> None:
    index = next(folder.glob("*.index.json"))
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    name = next(n for n, shard in data["weight_map"].items() if shard == shards[0])
    data["weight_map"][name] = shards[1]
    index.write_text(json.dumps(data))


def only_the_language_model(folder: Path) -> None:
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("model.visual.")}, folder / "pytorch_model.bin")


def both_prefixes(folder: Path) -> None:
    save_file({"visual.merger.norm.weight": torch.zeros(2)}, str(folder / "extra.safetensors"))


def legacy_bin(folder: Path) -> None:
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)


def another_format(folder: Path) -> None:
    (folder / "pytorch_model.bin").rename(folder / "model.pt")


DAMAGE = {
    "lfs-safetensors": ("safetensors", lambda d: lfs_pointer(d / "model.safetensors"),
                        "{d}/model.safetensors: a git-lfs pointer, not the file: run `git lfs pull` in {d}"),
    "lfs-bin-shard": ("bin-sharded", lambda d: lfs_pointer(first_shard(d)),
                      "{d}/pytorch_model-00001-of-0000?.bin: a git-lfs pointer, not the file: run `git lfs pull`*"),
    "truncated-safetensors": ("safetensors", lambda d: truncate(d / "model.safetensors"),
                              "{d}/model.safetensors: truncated: * bytes, its header needs *"),
    "truncated-header": ("safetensors-sharded", lambda d: truncate(first_shard(d), 20),
                         "{d}/model-00001-of-0000?.safetensors: truncated or not a safetensors file*"),
    "truncated-bin": ("bin", lambda d: truncate(d / "pytorch_model.bin"), "{d}/pytorch_model.bin: truncated"),
    "missing-shard": ("safetensors-sharded", drop_a_shard,
                      "{d}/model.safetensors.index.json: names model-00001-of-0000?.safetensors, which is not in "
                      "the folder (1 of ? shards missing)"),
    "misplaced-tensor": ("bin-sharded", misplace_a_tensor,
                         "{d}/pytorch_model.bin.index.json: puts * in pytorch_model-00002-of-0000?.bin, which does "
                         "not hold it"),
    "no-vision": ("bin", only_the_language_model,
                  "{d}: no vision tensors (names starting with model.visual. or visual. or thinker.visual. or "
                  "thinker.model.visual.) in pytorch_model.bin"),
    "both-prefixes": ("safetensors", both_prefixes, "{d}: vision tensors under both model.visual. and visual.*"),
    "legacy-bin": ("bin", legacy_bin, "{d}/pytorch_model.bin: not a zip file as torch.save writes*"),
    "unread-format": ("bin", another_format, "{d}: model.pt is not a weights file read here*"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_weights_that_cannot_be_read_are_refused_in_one_line(damage: str, folders, tmp_path: Path) -> None:
    case, spoil, expected = DAMAGE[damage]
    folder = copy_of(folders[case], tmp_path)
    spoil(folder)
    with pytest.raises(ConfigError) as raised:
        resolve_config(str(folder), Path("/"))
    message = str(raised.value)
    assert "\n" not in message
    assert fnmatch.fnmatchcase(message, expected.format(d=folder)), message


def test_a_damaged_folder_is_a_usage_error(run_suite: RunSuite, folders, tmp_path: Path) -> None:
    folder = copy_of(folders["safetensors"], tmp_path)
    lfs_pointer(folder / "model.safetensors")
    result = run_suite("test_runtime.py", f"--qwen3vl-config={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [f"ERROR: --qwen3vl-config='{folder}': {folder}/model.safetensors: a git-lfs pointer, "
                      "not the file: "
                      f"run `git lfs pull` in {folder}"]


def test_suite_runs_on_a_sharded_bin_folder(run_suite: RunSuite, folders) -> None:
    folder = folders["bin-sharded"]
    result = run_suite("test_runtime.py", f"--qwen3vl-config={folder}")
    result.assert_outcomes(passed=2)
    shards = len(weight_files(folder))
    result.stdout.fnmatch_lines([f"qwen3vl config: {folder}; weights: the checkpoint's {shards} bin shards; *"])


def test_export_command_exports_the_bin_folders_weights_and_the_file_holds(
    run_suite: RunSuite, folders, model, tmp_path: Path, capsys
) -> None:
    """Issue 19's case: golden held seeded weights, and the correct file was told "weights differ"."""
    import onnxruntime

    folder, out, grid = folders["bin"], tmp_path / "vision.onnx", Grid.parse("1,4,4")
    assert export_main(["--config", str(folder), "--grid", grid.text, "--recipe", "report", "-o", str(out)]) == 0
    assert "weights: the checkpoint's pytorch_model.bin)" in capsys.readouterr().err.splitlines()[0]
    inputs = make_inputs(grid, resolve_config(str(folder), Path("/")), seed=0)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixel_values": inputs.pixel_values.numpy(), "image_grid_thw": inputs.grid_thw.numpy()})
    with torch.no_grad():
        expected = merged(model.model.visual(*inputs.args))
    torch.testing.assert_close(torch.from_numpy(got[0]), expected, rtol=1e-4, atol=1e-5)
    result = run_suite("test_artefact.py", f"--qwen3vl-config={folder}", f"--qwen3vl-onnx={out}",
                       f"--qwen3vl-grid={grid.text}")
    for claim in ("artefact-parity", "artefact-weights", "artefact-graph", "artefact-grids", "artefact-where"):
        assert " holds " in claim_row(result, claim), claim_row(result, claim)


def test_export_command_refuses_a_truncated_bin_in_one_line(folders, tmp_path: Path, capsys) -> None:
    folder = copy_of(folders["bin"], tmp_path)
    truncate(folder / "pytorch_model.bin")
    assert export_main(["--config", str(folder), "--recipe", "report", "-o", str(tmp_path / "vision.onnx")]) == 2
    assert capsys.readouterr().err == f"qwen3vl-export: --config='{folder}': {folder}/pytorch_model.bin: truncated\n"


def test_checkpoint_of_another_shape_is_refused(tmp_path: Path, golden_module) -> None:
    save_file({"model.visual.merger.linear_fc2.bias": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": VISION_PRESETS["tiny"]}))
    with pytest.raises(ConfigError, match=r"do not fit the config: size mismatch for merger\.linear_fc2\.bias"):
        build_golden(golden_module, resolve_config(str(tmp_path), Path("/")), seed=0)


def test_an_interrupted_checkpoint_leaves_nothing_and_the_retry_writes_it(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        write_checkpoint(out, "tiny", 0, progress=stop_at("saving model.safetensors"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    for target in (out, tmp_path / "empty"):
        assert write_checkpoint(target, "tiny", 0, vision_only=True) == target
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "empty"]


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
    assert " holds " in claim_row(result, "text-mrope")
    assert "AttributeError" not in result.stdout.str()
