"""The family: forks of ``modeling_qwen3_vl_moe.py`` and ``modeling_qwen3_omni_moe.py`` made by applying the
report's change run the claims that apply to them, on a tiny config of their own classes; a wrong fork of
them fails those claims; the pipeline claims run on the MoE whole model and on Omni's thinker (a tiny sparse
language model around golden's tower; the thinker's audio tower tiny and idle); the family's shipped export
snapshots hold for the reference fork and catch a wrong one; a checkpoint of another family is a usage
error.

Each fork is generated from the installed file of its family, so the tests follow whichever transformers
is installed (CI runs them under 5.x too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.judge.golden import GoldenRuns
from pytest_qwen3vl.judge.pipeline_cost import WholeModel
from pytest_qwen3vl.model import outputs
from pytest_qwen3vl.model import pipeline as pl
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.configs import TEXT_PRESETS, VISION_PRESETS, resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.plugin.bundled import snapshots_dir
from pytest_qwen3vl.plugin.snapshots import versions_label
from pytest_qwen3vl.runtimes.genai_folder import genai_missing
from pytest_qwen3vl.source.families import FAMILIES, QWEN3_OMNI_MOE, QWEN3_VL_MOE, Family
from pytest_qwen3vl.source.files import (
    GOLDEN_IF_LINE,
    import_modeling_file,
    installed_golden_path,
    reference_modified_text,
)
from tests.conftest import RunSuite
from tests.helpers import claim_row, omni_checkpoint

pytestmark = pytest.mark.qwen3vl_versions

NOT_DYNAMO = ("-k", "not dynamo_exporter")  # dynamo fails the same way for every file: skip its seconds here
# The claims about the vision tower and its export, each decided on the family's own classes.
VISION_CLAIMS = ("one-diff", "deepstack-condition", "deepstack-body", "golden-deepstack-always",
                 "modified-onnx-outputs", "export-pooled-embeds", "onnx-parity", "export-graph-vs-golden",
                 "runtime-equivalence", "output-contract", "input-contract", "patch-dim", "trace-hazards")
GENAI_GENERATION = ("genai-image-features", "genai-deepstack-off", "genai-like-golden", "genai-other-grid",
                    "genai-grid-free")
VISION_MLP_LINE = "return self.linear_fc2(self.act_fn(self.linear_fc1(hidden_state)))"
NO_TRACING_CLAUSE = 'layer_num in self.deepstack_visual_indexes and not getattr(self, "_skip_deepstack_export", False)'


def fork(folder: Path, family: Family, make: str = "reference") -> Path:
    """A fork of the installed ``family`` file: the report's change (``reference``), that change with the vision
    MLP's activation dropped (``no_activation``), none (``unapplied``: a comment only), or the change without
    its tracing clause (``no_tracing_clause``)."""
    golden = installed_golden_path(family).read_text(encoding="utf-8")
    if make == "reference":
        text = reference_modified_text(golden)
    elif make == "no_activation":
        text = reference_modified_text(golden).replace(VISION_MLP_LINE, VISION_MLP_LINE.replace("self.act_fn(", "("))
    elif make == "unapplied":
        text = golden.replace(GOLDEN_IF_LINE, f"            # exported by our builder\n{GOLDEN_IF_LINE}")
    else:
        text = golden.replace(GOLDEN_IF_LINE, f"            if {NO_TRACING_CLAUSE}:\n")
    assert text != golden
    path = folder / family.relative_path.name
    path.write_text(text, encoding="utf-8")
    return path


def logits_gap(row: str) -> float:
    """The relative L2 of the logits a pipeline claim's row measured."""
    found = re.search(r"logits ([0-9.e+-]+);", row)
    assert found, row
    return float(found.group(1))


@pytest.mark.parametrize("family", [QWEN3_VL_MOE, QWEN3_OMNI_MOE], ids=lambda family: family.name)
def test_a_family_fork_holds_the_vision_and_export_claims(run_suite: RunSuite, tmp_path: Path, family: Family) -> None:
    result = run_suite("test_source.py", "test_deepstack.py", "test_export.py", "test_runtime.py",
                       "test_contracts.py", "test_mrope.py", "test_pipeline.py", "test_genai.py", *NOT_DYNAMO,
                       modified=fork(tmp_path, family))
    for claim in VISION_CLAIMS:
        row = claim_row(result, claim)
        assert " holds " in row, row
    assert family.deepstack_place in claim_row(result, "one-diff")
    # Omni's DeepStack weights are named merger_list: the pooled export holds none of them.
    assert f"no {family.mergers} initializer in the pooled export" in claim_row(result, "deepstack-not-traced")
    # golden's whole model fed the exports: DeepStack kept is golden, pooled only is not
    kept, like = claim_row(result, "pipeline-deepstack-kept"), claim_row(result, "pipeline-like-golden")
    assert " holds " in kept and logits_gap(kept) < 1e-4, kept
    assert " erratum " in like and logits_gap(like) > 0.1, like
    # genai's builder makes Qwen3-VL's dense language model only
    reason = genai_missing() or family.not_generated().removeprefix("not run: ")
    for claim in GENAI_GENERATION:
        row = claim_row(result, claim)
        assert f"not run: {reason}" in row, row
    mrope = claim_row(result, "text-mrope")
    assert " holds " in mrope, mrope
    assert "fails" not in "".join(claim_row(result, claim) for claim in VISION_CLAIMS)


@pytest.mark.parametrize(
    "wiring",
    [lambda ds: ds, lambda ds: [ds[0] * 0, *ds], lambda ds: ds[::-1], lambda ds: None],
    ids=["golden", "one-layer-late", "reversed", "dropped"],
)
@pytest.mark.parametrize("family", [QWEN3_VL_MOE, QWEN3_OMNI_MOE], ids=lambda family: family.name)
def test_the_family_language_model_adds_deepstack_as_golden_does(
    request: pytest.FixtureRequest, family: Family, wiring: Callable[[list[Any]], list[Any] | None]
) -> None:
    """``language_run`` on golden's whole model of the family (MoE's, Omni's thinker) is golden's forward only
    when every feature is fed at its layer; the measured gap decides the pipeline claims, so it must see a
    wrong wiring."""
    spec = resolve_config("tiny", Path("."))
    golden = import_modeling_file(installed_golden_path(family), "golden")
    vision = build_golden(golden, spec, 0)
    model = pl.build_full_model(golden, spec, vision, 0)
    assert type(model).__name__ == family.whole and model.config.text_config.num_experts == 4
    inputs = make_inputs(Grid.parse("1,24,24"), spec, 0)
    ids = pl.make_prompt(pl.image_counts(inputs.grid_thw, spec.merge_size), model.config, 0)
    with torch.no_grad():
        found = vision(*inputs.args)
    gap = pl.pipeline_gap(pl.language_run(model, ids, inputs.grid_thw, outputs.merged(found),
                                          wiring(outputs.deepstack(found))),
                          pl.golden_run(model, ids, *inputs.args), ids, model.config.image_token_id)
    right = "golden" in request.node.callspec.id.split("-")
    assert (gap.worst <= pl.tolerance(model)) == right, gap.text()


@pytest.mark.parametrize(("make", "broken"), [
    ("unapplied", ("one-diff", "deepstack-not-traced")),
    ("no_tracing_clause", ("deepstack-condition", "deepstack-not-traced")),
])
def test_a_wrong_family_fork_fails_them(
    run_suite: RunSuite, tmp_path: Path, make: str, broken: tuple[str, ...]
) -> None:
    result = run_suite("test_source.py", "test_export.py", *NOT_DYNAMO, modified=fork(tmp_path, QWEN3_VL_MOE, make))
    for claim in broken:
        row = claim_row(result, claim)
        assert " fails " in row, row
    assert " holds " in claim_row(result, "golden-onnx-outputs") or " erratum " in claim_row(result,
                                                                                              "golden-onnx-outputs")


@pytest.mark.parametrize("family", [QWEN3_VL_MOE, QWEN3_OMNI_MOE], ids=lambda family: family.name)
def test_the_family_snapshots_hold_and_catch_a_wrong_fork(run_suite: RunSuite, tmp_path: Path, family: Family) -> None:
    """The contract and lowering snapshots shipped for the family (its name in the case: Omni's graph names its
    mergers otherwise) match the reference fork's exports, and a fork whose vision MLP lost its activation
    fails the pooled lowering. Lowering is compared where this torch, onnx and transformers have a folder."""
    if not (snapshots_dir() / "test_export_snapshots" / versions_label()).is_dir():
        pytest.skip(f"no lowering snapshots for {versions_label()}")
    for name in ("right", "wrong"):
        (tmp_path / name).mkdir()
    right = run_suite("test_export_snapshots.py", modified=fork(tmp_path / "right", family))
    right.assert_outcomes(passed=4)
    wrong = run_suite("test_export_snapshots.py", modified=fork(tmp_path / "wrong", family, "no_activation"))
    wrong.assert_outcomes(passed=3, failed=1)
    wrong.stdout.fnmatch_lines([f"E * the exported graph changed: test_lowering[[]modified-pooled-{family.name}-tiny-"
                                "1x24x24[]].json differs: *"])
    assert " fails " in claim_row(wrong, "export-graph-vs-golden")


def whole_config(model_type: str) -> dict[str, object]:
    """A config.json of a whole model of ``model_type`` with the tiny dimensions (no weights: seeded ones)."""
    return {"model_type": model_type, "vision_config": VISION_PRESETS["tiny"], "text_config": TEXT_PRESETS["tiny"]}


@pytest.mark.parametrize("model_type", [name for name in FAMILIES if name != "qwen3_vl"])
def test_a_checkpoint_of_another_family_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path,
                                                         model_type: str) -> None:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(whole_config(model_type)), encoding="utf-8")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--qwen3vl-config={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --qwen3vl-config=*: a {model_type} checkpoint, and the file checked is a "
                                 "qwen3_vl one (modeling_qwen3_vl.py): name a qwen3_vl checkpoint, or a "
                                 f"{model_type} file with --qwen3vl-modified"])
    assert "Traceback" not in result.stderr.str()


def test_a_checkpoint_of_the_forks_family_is_accepted(pytester: pytest.Pytester, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(whole_config(QWEN3_VL_MOE.name)), encoding="utf-8")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--qwen3vl-config={folder}",
                                           f"--qwen3vl-modified={fork(tmp_path, QWEN3_VL_MOE)}", "--qwen3vl-suite=off")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


@pytest.mark.parametrize("family", [QWEN3_VL_MOE, QWEN3_OMNI_MOE], ids=lambda family: family.name)
def test_the_pipeline_cost_is_measured_on_the_family_whole_model(family: Family) -> None:
    """artefact-parity's cost runs on golden's whole model of the family: golden's own outputs cost nothing,
    outputs off by 1% move the next token's logits."""
    spec = resolve_config("tiny", Path("."))
    golden = import_modeling_file(installed_golden_path(family), "golden")
    whole = WholeModel(golden, GoldenRuns(build_golden(golden, spec, 0), spec, 0))
    grid = Grid.parse("1,24,24")
    pooled, *deepstack = whole.golden.outputs(grid)
    same = whole.cost(grid, pooled, deepstack)
    assert same.gap is not None and same.gap.logits == 0.0, same.text()
    noise = np.random.default_rng(0).standard_normal(pooled.shape).astype(pooled.dtype) * 0.01 * np.abs(pooled).max()
    moved = whole.cost(grid, pooled + noise, deepstack)
    assert moved.gap is not None and moved.gap.logits > 1e-3, moved.text()


def test_a_qwen3_omni_checkpoint_folder_is_read_as_released(run_suite: RunSuite, tmp_path: Path) -> None:
    """Its thinker's vision tower and language model are the checkpoint's (not seeded ones): golden holds the
    saved tensors, the claims run on them, and a folder without the thinker's vision tensors is refused."""
    folder = omni_checkpoint(tmp_path / "omni", seed=5)
    spec = resolve_config(str(folder), Path("."))
    assert spec.model_type == QWEN3_OMNI_MOE.name and spec.checkpoint == folder and spec.text is not None
    golden = import_modeling_file(installed_golden_path(QWEN3_OMNI_MOE), "golden")
    vision = build_golden(golden, spec, 0)  # seed 0: every tensor must come from the folder's seed 5
    tiny = resolve_config("tiny", Path("."))
    saved = pl.build_full_model(golden, tiny, build_golden(golden, tiny, 5), 5)
    assert torch.equal(vision.blocks[0].attn.qkv.weight, pl.parts(saved).holder.visual.blocks[0].attn.qkv.weight)
    whole = pl.build_full_model(golden, spec, vision, 0)
    assert torch.equal(whole.lm_head.weight.float(), saved.lm_head.weight.float())
    result = run_suite("test_runtime.py", "test_pipeline.py", f"--qwen3vl-config={folder}",
                       modified=fork(tmp_path, QWEN3_OMNI_MOE))
    result.stdout.fnmatch_lines(["qwen3vl config: *omni; weights: the checkpoint's model.safetensors; *"])
    assert " holds " in claim_row(result, "runtime-equivalence")
    assert " holds " in claim_row(result, "pipeline-deepstack-kept")
    assert " erratum " in claim_row(result, "pipeline-like-golden")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("thinker.visual.")},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=re.escape("no vision tensors (names starting with model.visual. or visual. "
                                                    "or thinker.visual. or thinker.model.visual.)")):
        build_golden(golden, resolve_config(str(folder), Path(".")), 0)
