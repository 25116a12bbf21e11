"""Claims golden-version, one-diff, deepstack-condition, deepstack-body: the files as text, no model built.

The three diff claims read one syntax-tree diff but judge separate things, so a failure points at
the part that drifted: one-diff counts the changes, deepstack-condition judges only the DeepStack
``if``'s test (by truth table), deepstack-body only that ``if``'s body. An extra change elsewhere
fails one-diff alone; a wrong condition fails deepstack-condition even when it is the only change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.plugin.claims import ClaimRecorder
from pytest_qwen3vl.source.diff import (
    EXPECTED_TABLE,
    Change,
    DiffReport,
    check_one_diff,
    read_source,
)
from pytest_qwen3vl.source.files import GOLDEN_CONDITION, MODIFIED_CONDITION, GoldenFile, transformers_version
from pytest_qwen3vl.source.goldens import REPORT_VERSION


@pytest.fixture(scope="module")
def deepstack_diff(qwen3vl_golden_path: Path, qwen3vl_modified_path: Path) -> DiffReport:
    """Both files parsed and judged once per module by ``check_one_diff``; the tests read its verdicts.
    An unreadable or unparsable file fails with file and line."""
    try:
        report = check_one_diff(read_source(qwen3vl_golden_path), read_source(qwen3vl_modified_path))
    except SourceError as exc:
        pytest.fail(f"cannot compare the modeling files: {exc}", pytrace=False)
    if report.target is None:
        pytest.fail(report.problems[0], pytrace=False)
    return report


def _expected_place(report: DiffReport) -> str:
    assert report.target is not None
    return f"{report.family.deepstack_place} (golden line {report.target.lineno})"


def _summary(change: Change) -> str:
    note = f" ({change.note})" if change.note else ""
    return f"{change.kind} at {change.where()}{note}"


def _details(changes: list[Change]) -> str:
    """Each change's lines, golden side ``-`` and modified side ``+``, for the lines under a message."""
    out = []
    for change in changes:
        out.append(f"  {_summary(change)}:")
        out.extend(f"    - {line}" for line in textwrap.dedent(change.golden_source).splitlines())
        out.extend(f"    + {line}" for line in textwrap.dedent(change.modified_source).splitlines())
    return "\n".join(out)


def _replaced_message(diff: DiffReport, replaced: Change) -> str:
    return (
        f"the DeepStack `if` of {_expected_place(diff)} was replaced as a whole at {replaced.where()}, "
        f"not only its test\n{_details([replaced])}"
    )


@pytest.mark.qwen3vl_claim("golden-version")
def test_golden_is_transformers_4_57_6(qwen3vl_golden: GoldenFile, qwen3vl_record: ClaimRecorder) -> None:
    """The fixture has refused any file that is neither a verified version's nor the installed one;
    which version it is decides holds (the report's 4.57.6) or erratum (another version)."""
    golden = qwen3vl_golden
    status = "verified" if golden.verified else f"not a verified version: {golden.coverage.line()}"
    qwen3vl_record.claim(
        reported=REPORT_VERSION,
        measured=qwen3vl_golden.version,
        detail=f"transformers {qwen3vl_golden.version}'s file, sha256 {qwen3vl_golden.digest[:12]}... ({status}; "
        f"installed transformers {transformers_version()})",
        said=f"transformers {REPORT_VERSION}",
    )


@pytest.mark.qwen3vl_claim("one-diff")
def test_exactly_one_change_the_deepstack_condition(
    deepstack_diff: DiffReport, qwen3vl_record: ClaimRecorder
) -> None:
    changes = deepstack_diff.changes
    expected = f"the DeepStack condition at {_expected_place(deepstack_diff)}"
    if not changes:
        pytest.fail(f"no change at all: expected exactly one, {expected}", pytrace=False)
    if deepstack_diff.condition_change is None:
        found = "; ".join(_summary(c) for c in changes)
        count = f"{len(changes)} change{'s' * (len(changes) != 1)}"
        pytest.fail(f"{count}, none of them {expected}: {found}\n{_details(changes)}", pytrace=False)
    extra = deepstack_diff.extra_changes
    if extra:
        also = "; ".join(_summary(c) for c in extra)
        pytest.fail(f"{len(changes)} changes, expected only {expected}; also: {also}\n{_details(extra)}", pytrace=False)
    change = deepstack_diff.condition_change
    qwen3vl_record.holds(
        f"1 change: condition at {change.place} golden:{change.golden_line} modified:{change.modified_line}"
    )


@pytest.mark.qwen3vl_claim("deepstack-condition")
def test_deepstack_condition_is_equivalent_to_the_report(
    deepstack_diff: DiffReport, qwen3vl_record: ClaimRecorder
) -> None:
    if deepstack_diff.replaced is not None:
        pytest.fail(_replaced_message(deepstack_diff, deepstack_diff.replaced), pytrace=False)
    change = deepstack_diff.condition_change
    text = deepstack_diff.condition or GOLDEN_CONDITION
    found = f"  found:    if {text}:\n  expected: if {MODIFIED_CONDITION}:  (or an equivalent)"
    if deepstack_diff.condition_problems:
        pytest.fail(f"{'; '.join(deepstack_diff.condition_problems)}\n{found}", pytrace=False)
    assert change is not None  # an unchanged golden condition always disagrees with the reference
    where = f"{change.place} golden:{change.golden_line} modified:{change.modified_line}"
    notes = "".join(f"; note: it {note}" for note in deepstack_diff.notes)
    qwen3vl_record.holds(f"equivalent to the reference in all {len(EXPECTED_TABLE)} combinations, at {where}{notes}")


@pytest.mark.qwen3vl_claim("deepstack-body")
def test_deepstack_body_is_golden(deepstack_diff: DiffReport, qwen3vl_record: ClaimRecorder) -> None:
    if deepstack_diff.replaced is not None:
        pytest.fail(_replaced_message(deepstack_diff, deepstack_diff.replaced), pytrace=False)
    target = deepstack_diff.target
    assert target is not None
    inside = deepstack_diff.body_changes
    if inside:
        pytest.fail(
            f"the body of the DeepStack `if` at {_expected_place(deepstack_diff)} differs from golden: "
            f"{'; '.join(_summary(c) for c in inside)}\n{_details(inside)}",
            pytrace=False,
        )
    qwen3vl_record.holds(
        f"{len(target.body)} statements as golden's, at {deepstack_diff.family.deepstack_place} "
        f"golden:{target.body[0].lineno}-{target.body[-1].end_lineno}"
    )
