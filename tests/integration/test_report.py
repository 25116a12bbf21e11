"""--qwen3vl-report writes the report again, complete under xdist; qwen3vl_slow runs only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunSuite
from tests.helpers import MERGER_LINE, modified_copy


@pytest.mark.parametrize("workers", [None, "2"], ids=["serial", "xdist"])
def test_report_has_every_section_and_claim(run_suite: RunSuite, tmp_path: Path, workers: str | None) -> None:
    report = tmp_path / "out" / "report.md"
    extra = ["-n", workers] if workers else []
    result = run_suite("test_runtime.py", f"--qwen3vl-report={report}", *extra, subprocess=bool(workers))
    result.assert_outcomes(passed=2)
    text = report.read_text()
    for section in ("Reference vs Modified", "Only code difference", "Shared math / behavior",
                    "Image sizes accepted by the vision model", "Bottom line"):
        assert f"\n## {section}\n" in text
    assert "| 21 | `runtime-equivalence` | When not exporting, behavior and weights match golden. | holds |" in text
    assert "- Config: `tiny`; grids: `1x24x24`; seed 0" in text
    assert "transformers 4.57.6" in text and "onnxruntime" in text


def test_report_lists_what_the_modified_file_breaks(run_suite: RunSuite, tmp_path: Path) -> None:
    wrong = modified_copy(tmp_path, MERGER_LINE, MERGER_LINE.replace("self.linear_fc1(x)", "self.linear_fc1(x) + 1"))
    report = tmp_path / "report.md"
    run_suite("test_runtime.py", f"--qwen3vl-report={report}", modified=wrong).assert_outcomes(passed=1, failed=1)
    text = report.read_text()
    assert "| **FAILS** |" in text
    assert "## Claims the modified file breaks" in text and "pooled embeddings differ from golden" in text


SLOW = """
import pytest

@pytest.mark.qwen3vl_slow
def test_real_size():
    pass
"""


def test_slow_tests_are_skipped_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SLOW)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*real-size model: run with --qwen3vl-run-slow*"])
    pytester.runpytest("--qwen3vl-run-slow").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nqwen3vl_run_slow = true\n")
    pytester.runpytest().assert_outcomes(passed=1)
