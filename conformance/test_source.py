"""Claims golden-version, one-diff, deepstack-condition, deepstack-body: the files as text, no model built.

The three diff claims read one syntax-tree diff but judge separate things, so a failure points at
the part that drifted: one-diff counts the changes, deepstack-condition judges only the DeepStack
``if``'s test (by truth table), deepstack-body only that ``if``'s body. An extra change elsewhere
fails one-diff alone; a wrong condition fails deepstack-condition even when it is the only change.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_qwen3vl.errors import SourceError, UndecidableCondition
from pytest_qwen3vl.plugin.claims import ClaimRecorder
from pytest_qwen3vl.source.diff import (
    DEEPSTACK_PLACE,
    EXPECTED_TABLE,
    Change,
    DiffReport,
    check_one_diff,
    deepstack_mode_table,
    deepstack_truth_table,
    describe_disagreements,
    find_deepstack_if,
    mode_notes,
    read_source,
)
from pytest_qwen3vl.source.files import (
    GOLDEN_CONDITION,
    GOLDEN_SHA256,
    GOLDEN_VERSION,
    MODIFIED_CONDITION,
    sha256_file,
    transformers_version,
)


@dataclass(frozen=True)
class DeepStackDiff:
    """The diff of the two files, and where the DeepStack ``if`` went in it."""

    report: DiffReport
    target: ast.If  # golden's DeepStack ``if``
    condition: Change | None  # the change of the ``if``'s test, if its test changed
    replaced: Change | None  # a change that swallowed the whole ``if`` (removed, or rewritten around it)

    @property
    def extra(self) -> list[Change]:
        """Every change but the DeepStack condition."""
        return [c for c in self.report.changes if c is not self.condition]

    @property
    def expected_place(self) -> str:
        return f"{DEEPSTACK_PLACE} (golden line {self.target.lineno})"


@pytest.fixture(scope="module")
def deepstack_diff(qwen3vl_golden_path: Path, qwen3vl_modified_path: Path) -> DeepStackDiff:
    """Both files parsed once per module; an unreadable or unparsable file fails with file and line."""
    try:
        golden, modified = read_source(qwen3vl_golden_path), read_source(qwen3vl_modified_path)
    except SourceError as exc:
        pytest.fail(f"cannot compare the modeling files: {exc}", pytrace=False)
    target = find_deepstack_if(golden.tree)
    if target is None:
        pytest.fail(f"{golden.label} has no `if {GOLDEN_CONDITION}:` in {DEEPSTACK_PLACE}", pytrace=False)
    report = check_one_diff(golden, modified)
    condition = next((c for c in report.changes if c.kind == "condition" and c.golden_nodes == (target,)), None)
    replaced = None
    if condition is None:
        replaced = next(
            (c for c in report.changes if not c.header and any(_contains(n, target) for n in c.golden_nodes)), None
        )
    return DeepStackDiff(report, target, condition, replaced)


def _contains(root: ast.AST, node: ast.AST) -> bool:
    return any(child is node for child in ast.walk(root))


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


def _replaced_message(diff: DeepStackDiff, replaced: Change) -> str:
    return (
        f"the DeepStack `if` of {diff.expected_place} was replaced as a whole at {replaced.where()}, "
        f"not only its test\n{_details([replaced])}"
    )


@pytest.mark.qwen3vl_claim("golden-version")
def test_golden_is_transformers_4_57_6(qwen3vl_golden_path: Path, qwen3vl_record: ClaimRecorder) -> None:
    digest = sha256_file(qwen3vl_golden_path)
    assert digest == GOLDEN_SHA256, (
        f"{qwen3vl_golden_path} has sha256 {digest[:12]}..., not transformers {GOLDEN_VERSION}'s "
        f"{GOLDEN_SHA256[:12]}... (installed transformers: {transformers_version()})"
    )
    qwen3vl_record.holds(
        f"sha256 {digest[:12]}... = transformers {GOLDEN_VERSION}'s (installed: {transformers_version()})"
    )


@pytest.mark.qwen3vl_claim("one-diff")
def test_exactly_one_change_the_deepstack_condition(
    deepstack_diff: DeepStackDiff, qwen3vl_record: ClaimRecorder
) -> None:
    changes = deepstack_diff.report.changes
    expected = f"the DeepStack condition at {deepstack_diff.expected_place}"
    if not changes:
        pytest.fail(f"no change at all: expected exactly one, {expected}", pytrace=False)
    if deepstack_diff.condition is None:
        found = "; ".join(_summary(c) for c in changes)
        count = f"{len(changes)} change{'s' * (len(changes) != 1)}"
        pytest.fail(f"{count}, none of them {expected}: {found}\n{_details(changes)}", pytrace=False)
    extra = deepstack_diff.extra
    if extra:
        also = "; ".join(_summary(c) for c in extra)
        pytest.fail(f"{len(changes)} changes, expected only {expected}; also: {also}\n{_details(extra)}", pytrace=False)
    change = deepstack_diff.condition
    qwen3vl_record.holds(
        f"1 change: condition at {change.place} golden:{change.golden_line} modified:{change.modified_line}"
    )


@pytest.mark.qwen3vl_claim("deepstack-condition")
def test_deepstack_condition_is_equivalent_to_the_report(
    deepstack_diff: DeepStackDiff, qwen3vl_record: ClaimRecorder
) -> None:
    if deepstack_diff.replaced is not None:
        pytest.fail(_replaced_message(deepstack_diff, deepstack_diff.replaced), pytrace=False)
    change = deepstack_diff.condition
    if change is None:
        test, text = deepstack_diff.target.test, GOLDEN_CONDITION
        prefix = f"the DeepStack condition at {deepstack_diff.expected_place}, unchanged from golden,"
        where = f"{DEEPSTACK_PLACE} golden:{deepstack_diff.target.lineno}"
    else:
        test = change.modified_nodes[0].test
        text = ast.unparse(test)
        prefix = f"the DeepStack condition at {change.where()}"
        where = f"{change.place} golden:{change.golden_line} modified:{change.modified_line}"
    found = f"  found:    if {text}:\n  expected: if {MODIFIED_CONDITION}:  (or an equivalent)"
    try:
        table = deepstack_truth_table(test)
    except UndecidableCondition as exc:
        pytest.fail(f"{prefix} is not the reference condition: {exc}\n{found}", pytrace=False)
    disagreements = describe_disagreements(table)
    if disagreements:
        pytest.fail(f"{prefix} differs from the reference: {'; '.join(disagreements)}\n{found}", pytrace=False)
    notes = "".join(f"; note: it {note}" for note in mode_notes(deepstack_mode_table(test)))
    qwen3vl_record.holds(f"equivalent to the reference in all {len(EXPECTED_TABLE)} combinations, at {where}{notes}")


@pytest.mark.qwen3vl_claim("deepstack-body")
def test_deepstack_body_is_golden(deepstack_diff: DeepStackDiff, qwen3vl_record: ClaimRecorder) -> None:
    if deepstack_diff.replaced is not None:
        pytest.fail(_replaced_message(deepstack_diff, deepstack_diff.replaced), pytrace=False)
    target = deepstack_diff.target
    inside = [c for c in deepstack_diff.report.changes if target in c.within]
    if inside:
        pytest.fail(
            f"the body of the DeepStack `if` at {deepstack_diff.expected_place} differs from golden: "
            f"{'; '.join(_summary(c) for c in inside)}\n{_details(inside)}",
            pytrace=False,
        )
    qwen3vl_record.holds(
        f"{len(target.body)} statements as golden's, at {DEEPSTACK_PLACE} "
        f"golden:{target.body[0].lineno}-{target.body[-1].end_lineno}"
    )
