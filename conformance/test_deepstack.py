"""Claims golden-deepstack-always and modified-deepstack-gated: which DeepStack mergers actually run.

The source claims judge the condition's text; these run the models, so a fork whose condition reads
right but behaves otherwise (a flag set elsewhere, a tracing check that never fires) is caught. Each
merger's calls are counted with forward hooks in eager mode and under ``torch.jit.trace``, with the
flag absent, False and True, and compared with the truth table of the condition each side claims.
Each count is measured once per file, config, seed and grid and kept in the cache like an export.

The whole model does not export with torch.export, so the condition alone is also run under every
exporter (``qwen3vl_gate``: torch.jit.trace, torch.export strict and non-strict, torch.onnx with
dynamo=True and False, and torch.compile, which is no exporter). Where the report's own condition
does what its words do not say, that is an erratum; where the file does what neither does, it fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_qwen3vl.errors import ModelRaised
from pytest_qwen3vl.judge.gate import (
    EXPORTERS,
    FLAGS,
    GateTable,
    GateVerdict,
    judge_gate,
    words_table,
)
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.plugin.claims import ClaimRecorder
from pytest_qwen3vl.plugin.exports import SessionExports
from pytest_qwen3vl.source.diff import (
    DEEPSTACK_PLACE,
    EXPECTED_TABLE,
    TruthTable,
    deepstack_truth_table,
    describe_disagreements,
)
from pytest_qwen3vl.source.files import GOLDEN_CONDITION

Case = tuple[bool, bool | None]  # (tracing, value of _skip_deepstack_export; None: the attribute is absent)

EAGER: tuple[Case, ...] = ((False, None), (False, False), (False, True))
# Golden reads neither input, so one trace suffices: the builder's, flag set and tracing, both reasons
# to skip at once. The modified model is also traced as-is (flag unset), where only tracing can skip.
GOLDEN_CASES: tuple[Case, ...] = (*EAGER, (True, True))
MODIFIED_CASES: tuple[Case, ...] = (*EAGER, (True, None), (True, True))


def _label(trace: bool, flag: bool | None) -> str:
    return f"{'traced' if trace else 'eager'} {'unset' if flag is None else flag}"


def _setting(trace: bool, flag: bool | None) -> str:
    """A case in words, for what happens to the whole forward (an exception, partial counts)."""
    state = "the flag unset" if flag is None else f"the flag = {flag}"
    return f"{'while tracing' if trace else 'in eager mode'} with {state}"


def _judge(
    exports: SessionExports, grid: Grid, which: str, cases: tuple[Case, ...], table: TruthTable, who: str
) -> tuple[list[str], str]:
    """Problems (one sentence per case that disagrees with ``table``) and the counts measured per case
    (``qwen3vl_export.deepstack_calls``: each case measured once and kept in the cache).

    A merger at a DeepStack layer runs exactly once per forward where the table says "run", never
    where it says "skip"; anything else (twice, some but not all) is reported with the counts.
    """
    problems: list[str] = []
    measured: list[str] = []
    for trace, flag in cases:
        combo = (True, bool(flag), trace)
        expected = table[combo]
        try:
            counts = exports.deepstack_calls(which, grid, trace=trace, flag=flag)
        except ModelRaised as raised:
            exc = raised.error
            problems.append(f"{_setting(trace, flag)}, {who} raises {type(exc).__name__}: {exc}")
            measured.append(f"{_label(trace, flag)} {type(exc).__name__}")
            continue
        measured.append(f"{_label(trace, flag)} {','.join(str(n) for n in counts)}")
        if set(counts) == {int(expected)}:
            continue
        if len(set(counts)) == 1 and counts[0] in (0, 1):
            # The truth table knows "set" and "unset" only; say so when the flag is present but False.
            aside = " [the flag = False]" if flag is False else ""
            problems.extend(s + aside for s in describe_disagreements({combo: bool(counts[0])}, {combo: expected}, who))
        else:
            problems.append(
                f"{_setting(trace, flag)}, {who} ran the mergers {counts} times (expected each {int(expected)})"
            )
    return problems, "; ".join(measured)


@pytest.mark.qwen3vl_claim("golden-deepstack-always")
def test_golden_runs_every_merger_always(
    qwen3vl_export: SessionExports, qwen3vl_grid: Grid, qwen3vl_record: ClaimRecorder
) -> None:
    # Golden's own condition is the expectation: it reads neither the flag nor tracing.
    table = deepstack_truth_table(GOLDEN_CONDITION)
    problems, measured = _judge(qwen3vl_export, qwen3vl_grid, "golden", GOLDEN_CASES, table, "golden")
    if problems:
        pytest.fail(f"DeepStack in golden {DEEPSTACK_PLACE}: {'; '.join(problems)}", pytrace=False)
    qwen3vl_record.holds(f"mergers run per case: {measured}")


@pytest.mark.qwen3vl_claim("modified-deepstack-gated")
def test_modified_runs_mergers_only_when_not_exporting(
    qwen3vl_export: SessionExports, qwen3vl_grid: Grid, qwen3vl_record: ClaimRecorder
) -> None:
    problems, measured = _judge(
        qwen3vl_export, qwen3vl_grid, "modified", MODIFIED_CASES, EXPECTED_TABLE, "the modified model"
    )
    if problems:
        pytest.fail(f"DeepStack in modified {DEEPSTACK_PLACE}: {'; '.join(problems)}", pytrace=False)
    qwen3vl_record.holds(f"mergers run per case: {measured}")


NOT_EXPORTING = ("eager", "torch.compile")
Gate = Callable[[str], GateTable]


def record_gate(record: ClaimRecorder, verdict: GateVerdict, said: str, place: str) -> None:
    """Fail on the file's own faults; otherwise holds or erratum, decided on the measured cells."""
    if verdict.problems:
        pytest.fail(f"DeepStack in {place}: {'; '.join(verdict.problems)}", pytrace=False)
    record.claim(reported=verdict.reported, measured=verdict.measured, detail=verdict.detail(), said=said)


@pytest.mark.qwen3vl_claim("golden-deepstack-always")
def test_golden_condition_runs_under_every_exporter(qwen3vl_gate: Gate, qwen3vl_record: ClaimRecorder) -> None:
    table = qwen3vl_gate("golden")
    words = words_table(lambda exporter, flag: True, EXPORTERS, tuple(FLAGS))
    record_gate(qwen3vl_record, judge_gate(table, table, words, "golden"), "runs everywhere",
                f"golden {DEEPSTACK_PLACE}")


@pytest.mark.qwen3vl_claim("modified-deepstack-gated")
def test_modified_condition_skips_under_every_exporter(qwen3vl_gate: Gate, qwen3vl_record: ClaimRecorder) -> None:
    words = words_table(lambda exporter, flag: exporter in NOT_EXPORTING and flag != "True", EXPORTERS, tuple(FLAGS))
    verdict = judge_gate(qwen3vl_gate("modified"), qwen3vl_gate("reference"), words, "the modified condition")
    record_gate(
        qwen3vl_record, verdict,
        "runs in eager mode and under torch.compile unless the flag is set; skips under every exporter",
        f"modified {DEEPSTACK_PLACE}",
    )
