"""The end-to-end pipeline checks catch wrong wiring: a DeepStack file with two outputs swapped, the
features fed at the wrong layers, and no features at all; a checkpoint's language model loads; and
the measurement is the same in a child process (where a released size runs) and made once per run.

Each case goes through the functions the pipeline claims use (``split_outputs``, ``language_run``,
``pipeline_gap``, ``tolerance``), on golden's real export run in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from pytest_qwen3vl.errors import ConfigError, NotRunnable, ProbeFailed
from pytest_qwen3vl.export.builder import export_vision
from pytest_qwen3vl.judge import pipeline as jp
from pytest_qwen3vl.model import pipeline as pl
from pytest_qwen3vl.model.build import VisionPair, build_golden
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import VisionInputs, make_inputs
from pytest_qwen3vl.onnxfile.names import split_outputs
from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_outputs
from pytest_qwen3vl.source.families import QWEN3_VL
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path

GRID = Grid.parse("1,16,16")


@pytest.fixture(scope="module")
def golden_module() -> Any:
    return import_modeling_file(installed_golden_path(), "golden")


@pytest.fixture(scope="module")
def inputs() -> VisionInputs:
    return make_inputs(GRID, resolve_config("tiny", Path(".")), 0)


@pytest.fixture(scope="module")
def deepstack_file(pair: VisionPair, inputs: VisionInputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "golden-all.onnx"
    export_vision(pair.golden, *inputs.args, path, wrapper="all")
    return path


@pytest.fixture(scope="module")
def case(golden_module: Any, pair: VisionPair, inputs: VisionInputs) -> tuple[Any, torch.Tensor, pl.PipelineRun]:
    spec = resolve_config("tiny", Path("."))
    model = pl.build_full_model(golden_module, spec, pair.golden, 0)
    ids = pl.make_prompt(pl.image_counts(inputs.grid_thw, spec.merge_size), model.config, 0)
    return model, ids, pl.golden_run(model, ids, *inputs.args)


def gap(case: tuple[Any, torch.Tensor, pl.PipelineRun], inputs: VisionInputs, pooled: Any,
        deepstack: list[Any] | None) -> pl.PipelineGap:
    model, ids, golden = case
    run = pl.language_run(model, ids, inputs.grid_thw, pooled, deepstack)
    return pl.pipeline_gap(run, golden, ids, model.config.image_token_id)


def swapped_outputs(path: Path, first: str, second: str, target: Path) -> Path:
    """A copy whose graph outputs ``first`` and ``second`` carry each other's tensors."""
    shutil.copyfile(path, target)
    model = onnx.load(str(target))
    rename = {first: second, second: first}
    for node in model.graph.node:
        node.output[:] = [rename.get(name, name) for name in node.output]
        node.input[:] = [rename.get(name, name) for name in node.input]
    onnx.save(model, str(target))
    return target


def test_language_model_fed_the_deepstack_file_is_golden(case, inputs, deepstack_file) -> None:
    pooled, deepstack = split_outputs(run_outputs(ort_session(deepstack_file), *inputs.args))
    assert len(deepstack) == 3
    assert gap(case, inputs, pooled, deepstack).worst <= pl.tolerance(case[0])


def test_two_outputs_swapped_are_caught_end_to_end(case, inputs, deepstack_file, tmp_path: Path) -> None:
    wrong = swapped_outputs(deepstack_file, "deepstack_0", "deepstack_1", tmp_path / "swapped.onnx")
    right = run_outputs(ort_session(deepstack_file), *inputs.args)
    outputs = run_outputs(ort_session(wrong), *inputs.args)
    assert (outputs["pooled_embeds"] == right["pooled_embeds"]).all()  # pooled parity cannot see it
    assert (outputs["deepstack_0"] == right["deepstack_1"]).all()
    pooled, deepstack = split_outputs(outputs)
    assert gap(case, inputs, pooled, deepstack).worst > pl.tolerance(case[0])


@pytest.mark.parametrize(
    "wiring",
    [lambda ds: [ds[0] * 0, *ds], lambda ds: ds[::-1], lambda ds: ds[:1], lambda ds: None],
    ids=["one-layer-late", "reversed", "first-only", "dropped"],
)
def test_features_at_the_wrong_layers_or_none_are_caught(case, inputs, deepstack_file, wiring) -> None:
    pooled, deepstack = split_outputs(run_outputs(ort_session(deepstack_file), *inputs.args))
    assert gap(case, inputs, pooled, wiring(deepstack)).worst > pl.tolerance(case[0])


def test_tiny_text_config_is_fitted_to_the_vision_tower() -> None:
    config = pl.pipeline_config(resolve_config("tiny", Path(".")), QWEN3_VL)
    assert config.text_config.hidden_size == config.vision_config.out_hidden_size == 2560
    assert config.text_config.num_hidden_layers > len(config.vision_config.deepstack_visual_indexes)


def test_checkpoint_language_model_is_loaded(golden_module: Any, tmp_path: Path) -> None:
    tiny = resolve_config("tiny", Path("."))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        saved = golden_module.Qwen3VLForConditionalGeneration._from_config(pl.pipeline_config(tiny, QWEN3_VL))
    saved.save_pretrained(tmp_path)
    spec = resolve_config(str(tmp_path), tmp_path)
    assert spec.checkpoint == tmp_path
    model = pl.build_full_model(golden_module, spec, build_golden(golden_module, spec, 0), seed=0)
    state, expected = model.state_dict(), saved.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items()), "a tensor differs from the checkpoint's"
    assert model.lm_head.weight.dtype == torch.float32  # below 2B parameters


def test_checkpoint_without_language_model_is_a_config_error(golden_module: Any, tmp_path: Path) -> None:
    tiny = resolve_config("tiny", Path("."))
    saved = golden_module.Qwen3VLForConditionalGeneration._from_config(pl.pipeline_config(tiny, QWEN3_VL))
    saved.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if k.startswith("model.visual.")}, weights)
    spec = resolve_config(str(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="no language-model tensors"):
        pl.build_full_model(golden_module, spec, build_golden(golden_module, spec, 0), seed=0)


def test_a_written_checkpoint_keeps_its_own_special_tokens(golden_module: Any, inputs: VisionInputs,
                                                          tmp_path: Path) -> None:
    """A ``qwen3vl-checkpoint`` folder names its tokenizer's ids in config.json; the whole model must
    use them, not the released vocabulary's (151655 is outside a 1024-token vocabulary)."""
    import json

    from pytest_qwen3vl.model.write_checkpoint import write_checkpoint

    folder = write_checkpoint(tmp_path / "ckpt", "tiny", 0)
    saved = json.loads((folder / "config.json").read_text())
    spec = resolve_config(str(folder), folder)
    config = pl.pipeline_config(spec, QWEN3_VL)
    assert config.image_token_id == saved["image_token_id"] < config.text_config.vocab_size
    model = pl.build_full_model(golden_module, spec, build_golden(golden_module, spec, 0), seed=0)
    ids = pl.make_prompt(pl.image_counts(inputs.grid_thw, spec.merge_size), model.config, 0)
    run = pl.golden_run(model, ids, *inputs.args)
    assert int((ids == saved["image_token_id"]).sum()) == 64 and bool(run.logits.isfinite().all())


@pytest.fixture(scope="module")
def measuring(pair: VisionPair, inputs: VisionInputs, deepstack_file: Path,
              tmp_path_factory: pytest.TempPathFactory) -> jp.Request:
    """The pipeline claims' request on ``GRID``: golden's DeepStack file and the modified pooled file."""
    pooled = tmp_path_factory.mktemp("onnx") / "modified-pooled.onnx"
    export_vision(pair.modified, *inputs.args, pooled)
    files: dict[str, str | None] = {jp.DEEPSTACK: str(deepstack_file), jp.POOLED: str(pooled)}
    return jp.Request(str(installed_golden_path()), "tiny", 0, {GRID.text: files})


def test_the_whole_model_process_measures_what_this_process_measures(measuring: jp.Request) -> None:
    here, there = jp.measure(measuring)[GRID.text], jp.measure_in_child(measuring)[GRID.text]
    assert (there["prompt"], there["tolerance"]) == (here["prompt"], here["tolerance"])
    for role in (jp.DEEPSTACK, jp.POOLED):
        assert there["gaps"][role]["deepstack_outputs"] == here["gaps"][role]["deepstack_outputs"]
        assert there["gaps"][role]["logits"] == pytest.approx(here["gaps"][role]["logits"], rel=1e-3, abs=1e-6)
    assert here["gaps"][jp.DEEPSTACK]["logits"] <= here["tolerance"] < here["gaps"][jp.POOLED]["logits"]


def test_a_failing_whole_model_process_is_our_fault_in_one_line(measuring: jp.Request, tmp_path: Path) -> None:
    broken = dataclasses.replace(measuring, golden=str(tmp_path / "missing" / "modeling_qwen3_vl.py"))
    with pytest.raises(ProbeFailed, match=r"^the whole-model process failed: \S.*[^\n]$"):
        jp.measure_in_child(broken)


def test_a_config_without_a_text_model_comes_back_as_a_config_error(measuring: jp.Request, tmp_path: Path) -> None:
    vision_only = tmp_path / "config.json"
    vision_only.write_text(json.dumps(resolve_config("tiny", tmp_path).vision))
    with pytest.raises(ConfigError, match="no text_config"):
        jp.measure_in_child(dataclasses.replace(measuring, config=str(vision_only)))


@pytest.mark.parametrize(("config", "child"), [("tiny", False), ("2b", True), ("4b", True)])
def test_a_released_size_is_measured_in_a_child(config: str, child: bool) -> None:
    assert jp.plan(jp.Request(str(installed_golden_path()), config, 0, {})) is child


def test_a_whole_model_beyond_the_machine_is_not_run_with_its_estimate() -> None:
    request = jp.Request(str(installed_golden_path()), "4b", 0, {})
    assert jp.plan(request, available=12 * 2**30)  # the 4B's child measured 11.1 GiB
    with pytest.raises(NotRunnable, match=r"^not run: the whole model \(4\.4 B parameters, language model in "
                       r"bfloat16\) needs about 11\.3 GiB; this machine has 10\.0 GiB$"):
        jp.plan(request, available=10 * 2**30)


def test_one_process_per_run_builds_the_whole_model(run_suite, tmp_path: Path) -> None:
    """Under ``-n 2``, both grids' four rows are decided from one whole-model measurement; a second run
    makes none."""
    cache = tmp_path / "cache"
    argv = ("test_pipeline.py", "-n", "2", "--qwen3vl-grid=1,16,16", "--qwen3vl-grid=1,24,24")
    log = cache / "exports" / "measured" / "builds.log"
    for run in (1, 2):
        result = run_suite(*argv, cache=cache, subprocess=True)
        result.assert_outcomes(passed=4)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        made = [line for line in lines if line["filename"] == "pipeline.txt" and line["status"] == "built"]
        assert len(made) == 1, f"run {run}: {len(made)} whole-model measurements, expected 1 in all"
        assert sum(line["filename"] == "pipeline.txt" for line in lines) == 1, f"run {run} made another: {lines}"
