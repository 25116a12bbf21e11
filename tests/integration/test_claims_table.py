"""The claims table end to end: complete with and without xdist, and failing on a wrong file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunSuite
from tests.helpers import MERGER_LINE, claim_row, modified_copy


@pytest.mark.parametrize("workers", [None, "2"], ids=["serial", "xdist"])
def test_table_is_complete(run_suite: RunSuite, workers: str | None) -> None:
    extra = ["-n", workers] if workers else []
    result = run_suite("test_runtime.py", "--qwen3vl-grid=1,24,24", "--qwen3vl-grid=1,8,8+1,4,4", *extra,
                       subprocess=bool(workers))
    result.assert_outcomes(passed=2)  # outputs are compared on the sweep's grids and the run's, in one test
    result.stdout.fnmatch_lines(["*= qwen3vl claims =*", "*# claim*status*statement*measured*"])
    line = claim_row(result, "runtime-equivalence")
    assert " holds " in line
    assert "holds on 10 grids (1x16x16, 1x24x24, " in line and ", 1x8x8+1x4x4); pooled (64, 2560)" in line
    # the other claims were not selected: no row each, one line that counts them
    assert "golden-onnx-outputs" not in result.stdout.str()
    result.stdout.fnmatch_lines(["qwen3vl claims not selected in this run: 34"])


def test_wrong_merger_arithmetic_fails_runtime_equivalence(run_suite: RunSuite, tmp_path: Path) -> None:
    wrong = modified_copy(tmp_path, MERGER_LINE,
                          "        x = self.linear_fc2(self.act_fn(self.linear_fc1(x)) * 1.0001)\n")
    result = run_suite("test_runtime.py", modified=wrong)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["fails on 9 of 9 grids: 1x16x16: pooled embeddings differ from golden: max abs *"])
    line = claim_row(result, "runtime-equivalence")
    assert " fails " in line and "pooled embeddings differ from golden" in line


def test_extra_weight_fails_state_dict_match(run_suite: RunSuite, tmp_path: Path) -> None:
    wrong = modified_copy(tmp_path, "        self.deepstack_visual_indexes = config.deepstack_visual_indexes\n",
                          "        self.deepstack_visual_indexes = config.deepstack_visual_indexes\n"
                          "        self.export_scale = nn.Parameter(torch.ones(1))\n")
    result = run_suite("test_runtime.py", modified=wrong)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["E * state dict keys differ*only in modified ?'export_scale'?"])


def test_changed_buffer_is_caught_though_weights_are_shared(run_suite: RunSuite, tmp_path: Path) -> None:
    wrong = modified_copy(tmp_path, "def __init__(self, dim: int, theta: float = 10000.0)",
                          "def __init__(self, dim: int, theta: float = 20000.0)")
    result = run_suite("test_runtime.py", modified=wrong)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*buffers differ*rotary_pos_emb.inv_freq*"])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("import torch\n", "import torch\ndef broken(:\n", "*modeling_qwen3_vl.py:*: SyntaxError: *"),
        ("class Qwen3VLVisionModel(", "class RenamedVisionModel(", "*modeling_qwen3_vl.py: defines no class*"),
        ("import torch\n", "import torch\nraise RuntimeError('broken fork')\n",
         "*modeling_qwen3_vl.py:*: RuntimeError: broken fork*"),
    ],
    ids=["syntax-error", "missing-class", "raises-on-import"],
)
def test_modified_file_that_does_not_import(run_suite: RunSuite, tmp_path: Path, old: str, new: str,
                                            message: str) -> None:
    result = run_suite("test_runtime.py", modified=modified_copy(tmp_path, old, new))
    assert result.parseoutcomes().get("passed", 0) == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"*the modified file does not import ({message}"])
    assert "pytest_qwen3vl/plugin/fixtures.py" not in result.stdout.str()
    assert " fails " in claim_row(result, "runtime-equivalence")


def test_a_modified_file_that_does_not_import_leaves_golden_claims_decided(run_suite: RunSuite, tmp_path: Path) -> None:
    """Claims about golden alone are decided without the fork; a claim that needs it fails in one line."""
    wrong = modified_copy(tmp_path, "import torch\n", "import torch\nfrom ...no_such_module import helper\n")
    picked = "golden_runs_every_merger or golden_traced_as_is or modified_exported_with_the_flag"
    result = run_suite("test_deepstack.py", "test_export.py", "-k", picked, "--qwen3vl-grid=1,8,8", modified=wrong)
    for claim in ("golden-deepstack-always", "golden-onnx-outputs"):
        row = claim_row(result, claim)
        assert " fails " not in row and "does not import" not in row, row
    row = claim_row(result, "modified-onnx-outputs")
    assert " fails " in row, row
    assert "the modified file does not import (" in row and ": ModuleNotFoundError: No module named" in row, row
    assert "Traceback" not in result.stdout.str()
