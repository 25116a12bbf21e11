"""The export conformance tests end to end: wrong modified files fail the right export claims, each
export is made once per run under xdist, and snapshots survive ``--snapshot-update -n 2``.

The inner runs share one cache (``run_suite``), so golden's exports are made once for this module.
"""

from __future__ import annotations

import collections
import filecmp
import json
import shutil
import time
from pathlib import Path

import pytest

from pytest_qwen3vl.plugin.bundled import snapshots_dir
from pytest_qwen3vl.plugin.snapshots import versions_label
from pytest_qwen3vl.store.cache import ArtifactCache
from tests.conftest import RunSuite
from tests.helpers import MERGER_LINE, claim_row, claim_status, modified_copy
from tests.variants import VARIANTS, golden_text

EXPORT_MODULES = ("test_export.py", "test_export_snapshots.py")
NOT_DYNAMO = ("-k", "not dynamo_exporter")  # dynamo fails the same way for every file: skip its seconds here
SNAPSHOT_MODULE = "test_export_snapshots"
POOLED_CONTRACT = "test_contract[modified-pooled-tiny-1x24x24].json"


def rows(result: pytest.RunResult, *claims: str) -> dict[str, str]:
    return {claim: claim_row(result, claim) for claim in claims}


def test_pre_merger_states_packed_into_outputs0_give_two_outputs(run_suite: RunSuite, tmp_path: Path) -> None:
    """A fork that keeps the pre-merger tokens next to the pooled ones (a stray ``, hidden_states``):
    the builder's ``outputs[0]`` wrapper then exports two tensors."""
    wrong = modified_copy(tmp_path, "        hidden_states = self.merger(hidden_states)\n",
                          "        hidden_states = self.merger(hidden_states), hidden_states\n")
    result = run_suite(*EXPORT_MODULES, *NOT_DYNAMO, modified=wrong)
    result.stdout.fnmatch_lines([
        "E * modified exported with the flag has 2 ONNX outputs [[]'pooled_embeds', *], expected one, pooled_embeds",
        "E * the export has outputs [[]'pooled_embeds', *], expected exactly one, pooled_embeds",
        "E * the export's contract changed: test_contract[[]modified-pooled-tiny-1x24x24[]].json differs: outputs + *",
    ])
    found = rows(result, "modified-onnx-outputs", "export-pooled-embeds", "export-graph-vs-golden",
                 "deepstack-not-traced", "trace-hazards")
    for claim in ("modified-onnx-outputs", "export-pooled-embeds", "export-graph-vs-golden"):
        assert " fails " in found[claim], found[claim]
    assert "has 2 ONNX outputs" in found["modified-onnx-outputs"]
    # The condition is the report's, so claim 9 is its erratum under torch.export, nothing this file broke.
    assert " erratum " in found["deepstack-not-traced"] and " holds " in found["trace-hazards"]


def test_condition_without_the_tracing_clause_runs_deepstack_under_trace(run_suite: RunSuite, tmp_path: Path) -> None:
    wrong = tmp_path / "modeling_qwen3_vl.py"
    wrong.write_text(VARIANTS["no_tracing_clause"].make(golden_text()), encoding="utf-8")
    result = run_suite(*EXPORT_MODULES, *NOT_DYNAMO, modified=wrong)
    result.assert_outcomes(passed=11, failed=2)
    result.stdout.fnmatch_lines([
        "E * while tracing with the flag unset, the modified DeepStack mergers ran [[]1, 1, 1[]] times "
        "(torch.jit.is_tracing() must skip them)",
        "*under torch.jit.trace with the flag unset, the modified condition runs DeepStack (the report says it "
        "skips; the report's condition skips)*",
    ])
    found = rows(result, "deepstack-not-traced", "modified-onnx-outputs", "export-graph-vs-golden")
    assert " fails " in found["deepstack-not-traced"] and "ran [1, 1, 1] times" in found["deepstack-not-traced"]
    # With the flag set the pooled export is still golden's: only the tracing clause is missing.
    assert " holds " in found["modified-onnx-outputs"] and " holds " in found["export-graph-vs-golden"]


def test_merger_arithmetic_changes_the_graph_but_not_parity(run_suite: RunSuite, tmp_path: Path) -> None:
    """ONNX Runtime still computes what this modified model computes; its graph is no longer golden's."""
    wrong = modified_copy(tmp_path, MERGER_LINE,
                          "        x = self.linear_fc2(self.act_fn(self.linear_fc1(x)) * 1.0001)\n")
    result = run_suite(*EXPORT_MODULES, *NOT_DYNAMO, modified=wrong)
    result.assert_outcomes(passed=11, failed=2)
    result.stdout.fnmatch_lines([
        "E * the modified pooled export differs from golden's: nodes * -> *; operators *Mul: * -> *",
        "E * the exported graph changed: test_lowering[[]modified-pooled-tiny-1x24x24[]].json differs: *Mul*",
    ])
    found = rows(result, "export-graph-vs-golden", "onnx-parity", "export-pooled-embeds")
    assert " fails " in found["export-graph-vs-golden"] and "Mul" in found["export-graph-vs-golden"]
    assert " holds " in found["onnx-parity"] and " holds " in found["export-pooled-embeds"]


def test_every_export_is_made_once_with_two_workers(run_suite: RunSuite, shared_cache: Path) -> None:
    """A seed no other test uses, so every export of this run is new to the shared cache."""
    started = time.time()
    result = run_suite(*EXPORT_MODULES, "-n", "2", "--qwen3vl-seed=7", subprocess=True)
    result.assert_outcomes(passed=13, xfailed=1)
    builds = [b for b in ArtifactCache(shared_cache / "exports").builds() if b["time"] >= started]
    per_key = collections.Counter(b["key"] for b in builds)
    assert set(per_key.values()) == {1}, f"exported more than once: {builds}"
    assert sorted((b["filename"], b["status"]) for b in builds) == [
        ("golden-all-torchscript-1x24x24.onnx", "built"),
        ("golden-pooled-torchscript-1x24x24.onnx", "built"),
        ("modified-grid-free-pooled-torchscript-1x24x24.onnx", "built"),
        ("modified-pooled-dynamo-1x24x24.onnx", "failed"),
        ("modified-pooled-torchscript-1x20x20.onnx", "built"),
        ("modified-pooled-torchscript-1x24x24.onnx", "built"),
        ("modified-tuple-torchscript-1x24x24.onnx", "failed"),
    ]
    assert {b["worker"] for b in builds} <= {"gw0", "gw1"}


def test_a_users_test_gets_cached_files_and_remembered_failures(run_suite: RunSuite, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="""
        import pytest
        from pytest_qwen3vl.errors import ExportFailed

        def test_mine(qwen3vl_export, qwen3vl_grid):
            first = qwen3vl_export("modified", qwen3vl_grid)
            assert qwen3vl_export("modified", qwen3vl_grid) == first
            with pytest.raises(ExportFailed) as failed:
                qwen3vl_export("modified", qwen3vl_grid, exporter="dynamo")
            with pytest.raises(ExportFailed) as again:
                qwen3vl_export("modified", qwen3vl_grid, exporter="dynamo")
            assert again.value.summary == failed.value.summary and "\\n" not in failed.value.summary
            assert [(b["filename"], b["status"]) for b in qwen3vl_export.builds] == [
                (first.name, "built"), ("modified-pooled-dynamo-1x4x4.onnx", "failed"),
            ]
    """)
    result = run_suite(str(pytester.path / "test_mine.py"), "--qwen3vl-grid=1,4,4", "--qwen3vl-seed=11")
    result.assert_outcomes(passed=1)


@pytest.fixture
def snapshot_copy(tmp_path: Path) -> Path:
    """The committed snapshots, plus a lowering snapshot of library versions this machine lacks."""
    copy = tmp_path / "snapshots"
    shutil.copytree(snapshots_dir(), copy)
    foreign = copy / SNAPSHOT_MODULE / "torch-0.0.1_onnx-0.0.1"
    foreign.mkdir()
    (foreign / "test_lowering[modified-pooled-tiny-1x24x24].json").write_text('{"nodes": 1}\n')
    return copy


def same_tree(left: Path, right: Path) -> list[str]:
    """Files missing, added or different between two folders, recursively."""
    comparison = filecmp.dircmp(left, right)
    problems = [f"{left.name}: only in one: {name}" for name in comparison.left_only + comparison.right_only]
    problems += [f"{left.name}: differs: {name}" for name in comparison.diff_files]
    for name in comparison.common_dirs:
        problems += same_tree(left / name, right / name)
    return problems


def test_snapshot_update_with_two_workers_loses_nothing(run_suite: RunSuite, snapshot_copy: Path,
                                                        tmp_path: Path) -> None:
    """Only the default grid runs, so the other grid's and the other versions' files look unused to
    syrupy; one file is missing and must come back as it was."""
    before = tmp_path / "before"
    shutil.copytree(snapshot_copy, before)
    (snapshot_copy / SNAPSHOT_MODULE / POOLED_CONTRACT).unlink()
    result = run_suite("test_export_snapshots.py", "--snapshot-update", "-n", "2",
                       f"--qwen3vl-snapshot-dir={snapshot_copy}", subprocess=True)
    result.assert_outcomes(passed=4)
    # The deleted file is back byte for byte and nothing else moved (syrupy's own summary line is
    # not reliable under xdist, the files are).
    assert same_tree(before, snapshot_copy) == []

    again = run_suite("test_export_snapshots.py", f"--qwen3vl-snapshot-dir={snapshot_copy}")
    assert again.ret == 0, "unused snapshots of other grids or versions must not fail a run"
    again.assert_outcomes(passed=4)  # each snapshot compared and matched: none skipped as missing


def test_mismatch_names_the_part_and_other_versions_skip(run_suite: RunSuite, snapshot_copy: Path) -> None:
    contract = snapshot_copy / SNAPSHOT_MODULE / POOLED_CONTRACT
    document = json.loads(contract.read_text())
    document["outputs"] = [line.replace("2560", "2048") for line in document["outputs"]]
    contract.write_text(json.dumps(document, indent=2) + "\n")
    shutil.rmtree(snapshot_copy / SNAPSHOT_MODULE / versions_label())
    result = run_suite("test_export_snapshots.py", "-rs", f"--qwen3vl-snapshot-dir={snapshot_copy}")
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "E * the export's contract changed: test_contract[[]modified-pooled-tiny-1x24x24[]].json differs: "
        "outputs - pooled_embeds: float32 [[]num_merged_patches, 2048[]], + pooled_embeds: float32 "
        "[[]num_merged_patches, 2560[]]",
        "E *-*\"pooled_embeds: float32 [[]num_merged_patches, 2048[]]\"",
        "E *+*\"pooled_embeds: float32 [[]num_merged_patches, 2560[]]\"",
    ])
    result.stdout.fnmatch_lines([
        f"SKIPPED [[]2[]] *no lowering snapshot for {versions_label().replace('_', ', ')} "
        # the other verified transformers version's lowering is shipped too
        "(snapshots exist for: torch-0.0.1_onnx-0.0.1, torch-*_transformers-*); record one with --snapshot-update",
    ])
    assert " fails " in claim_row(result, "export-pooled-embeds")


def test_onnx_parity_is_judged_per_runtime_at_the_precision_that_ran(run_suite: RunSuite) -> None:
    """The builder's file on ONNX Runtime and on the optimiser's fp16 rewrite: one row each, named with the
    runtime; the fp16 rewrite is held to the fp16 row and moves further from PyTorch than fp32 does."""
    result = run_suite("test_export.py", "-k", "onnx_runtime_computes", "--qwen3vl-runtime=onnxruntime",
                       "--qwen3vl-runtime=onnxruntime-optimized:fp16")
    row = claim_row(result, "onnx-parity")
    assert "onnxruntime-1x24x24: onnxruntime:fp32: pooled_embeds: max abs " in row, row
    assert "(fp32 tolerance: rel L2 <= 1e-05" in row, row
    assert ("onnxruntime-optimized:fp16-1x24x24: onnxruntime-optimized:fp16 (optimised as vit): pooled_embeds: "
            "max abs " in row and "(fp16 tolerance: rel L2 <= 0.005" in row), row
    result.assert_outcomes(passed=2)


def test_dynamic_n_is_judged_per_runtime_and_says_what_does_not_load(run_suite: RunSuite) -> None:
    """On OpenVINO the report's export refuses the other grid in OpenVINO's words, its own grid's export
    matches at the fp32 row, and the default grid-free file (TorchScript) does not load, named with the op
    and the exporter that avoids it."""
    pytest.importorskip("openvino", reason="pip install pytest-qwen3vl[openvino]")
    result = run_suite("test_export.py", "-k", "symbolic", "--qwen3vl-runtime=onnxruntime",
                       "--qwen3vl-runtime=openvino:f32")
    row = claim_row(result, "dynamic-n")
    assert ("onnxruntime-1x24x24: onnxruntime:fp32: first axes symbolic (num_images, num_merged_patches, "
            "num_patches); the 1x24x24 export on 1x20x20: fails (ONNX Runtime: Reshape node ") in row, row
    # OpenVINO 2026.4 refuses the reshape on two threads and returns an empty output on one (an xdist
    # worker's share of two cores): either way the other grid is not served, in OpenVINO's outcome.
    other = row.split("openvino:f32-1x24x24: openvino:f32: first axes symbolic (num_images, num_merged_patches, "
                      "num_patches); the 1x24x24 export on 1x20x20: ", 1)
    assert len(other) == 2 and other[1].startswith(("fails (openvino: ", "shape (0, 2560), PyTorch (100, 2560)")), row
    assert "a 1x20x20 export on 1x20x20 matches PyTorch (fp32 tolerance)" in row, row
    assert ("grid-free recipe (qwen3vl-export): one file serves 0 of 9 grids; refuses every grid (openvino: does "
            "not load: Conversion is failed for: SequenceAt-17") in row, row
    assert "serves 9 of 9 grids (worst relative L2" in row, row  # the same recipe on ONNX Runtime
    assert claim_status(result, "dynamic-n") == "erratum"
    result.assert_outcomes(passed=2)
