"""The source and DeepStack claims against every modified-file variant of ``tests/variants.py``.

One in-process run per variant, of both conformance modules: a harmless variant passes all eight
tests; a wrong one fails exactly the claims listed here, and each failing claim's message and
table row name the place that drifted. The claims are meant to judge independently, so the lists
also say which claims a wrong variant must leave standing (an extra change elsewhere fails one-diff
but not deepstack-condition; an inverted condition is one change and fails only the condition).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qwen3vl.source.files import GOLDEN_IF_LINE
from pytest_qwen3vl.source.goldens import REPORT_VERSION
from pytest_qwen3vl.versions import transformers_version
from tests.conftest import RunSuite
from tests.helpers import claim_row
from tests.variants import PLACE, VARIANTS, Variant, golden_text

# These self-tests run on every verified transformers version (CI's second environment has 5.23.0).
pytestmark = pytest.mark.qwen3vl_versions
# The installed golden's DeepStack `if` line: 745 in 4.57.6, 706 in 5.23.0.
IF_LINE = golden_text()[: golden_text().index(GOLDEN_IF_LINE)].count("\n") + 1
# golden-version is an erratum (not a failure) on any other version than the report's.
GOLDEN_VERSION_STATUS = " holds " if transformers_version() == REPORT_VERSION else " erratum "

MODULES = ("test_source.py", "test_deepstack.py")
# The smallest grid the tiny model takes: which mergers run does not depend on the grid.
GRID = "--qwen3vl-grid=1,8,8"
CLAIMS = (
    "golden-version",
    "one-diff",
    "deepstack-condition",
    "deepstack-body",
    "golden-deepstack-always",
    "modified-deepstack-gated",
)

TRACED_UNSET_RUNS = "while tracing with the flag unset, the modified model runs DeepStack (expected: skip)"
EAGER_UNSET_SKIPS = "in eager mode with the flag unset, the modified {} skips DeepStack (expected: run)"

# For each wrong variant: claim -> a fragment of the first line of its failure. Every other claim holds.
FAILURES: dict[str, dict[str, str]] = {
    "inverted": {
        "deepstack-condition": EAGER_UNSET_SKIPS.format("file"),
        "modified-deepstack-gated": EAGER_UNSET_SKIPS.format("model"),
    },
    "no_tracing_clause": {
        "deepstack-condition": "while tracing with the flag unset, the modified file runs DeepStack (expected: skip)",
        "modified-deepstack-gated": TRACED_UNSET_RUNS,
    },
    "flag_renamed": {
        "deepstack-condition": "is not the reference condition: reads another flag, `'_skip_export'`",
        "modified-deepstack-gated": "in eager mode with the flag set, the modified model runs DeepStack",
    },
    "flag_default_true": {
        "deepstack-condition": EAGER_UNSET_SKIPS.format("file"),
        "modified-deepstack-gated": EAGER_UNSET_SKIPS.format("model"),
    },
    "flag_plain_attribute": {
        "deepstack-condition": "`self._skip_deepstack_export` raises AttributeError while the flag was never set",
        "modified-deepstack-gated": "in eager mode with the flag unset, the modified model raises AttributeError",
    },
    "changed_body": {
        "one-diff": f"2 changes, expected only the DeepStack condition at {PLACE}",
        "deepstack-body": f"the body of the DeepStack `if` at {PLACE} (golden line {IF_LINE}) differs from golden",
    },
    "extra_change_other_function": {"one-diff": "also: changed at Qwen3VLVisionMLP.forward"},
    "absolute_import": {"one-diff": "also: import at <module>"},
    "extra_tracing_branch": {"one-diff": f"also: added at {PLACE} (not in golden"},
    "unguarded": {
        "one-diff": f"1 change, none of them the DeepStack condition at {PLACE}",
        "deepstack-condition": f"was replaced as a whole at {PLACE}",
        "deepstack-body": f"was replaced as a whole at {PLACE}",
        "modified-deepstack-gated": "in eager mode with the flag unset, the modified model raises ValueError",
    },
    "dynamo_compiling": {
        "modified-deepstack-gated": "under torch.compile with the flag unset, the modified condition skips DeepStack",
    },
    "unchanged": {
        "one-diff": f"no change at all: expected exactly one, the DeepStack condition at {PLACE}",
        "deepstack-condition": f"at {PLACE} (golden line {IF_LINE}), unchanged from golden, differs from the reference",
        "modified-deepstack-gated": TRACED_UNSET_RUNS,
    },
}

SOURCE_VARIANTS = [v for v in VARIANTS.values() if v.check == "source"]
GATED = "modified-deepstack-gated"  # decided by two tests: merger hooks, and the condition under each exporter
# The report's own condition runs DeepStack under torch.export unless the flag is set: an erratum of
# claim 4 for every file with that condition, and none for a file that also skips under torch.export.
GATE_HOLDS = {"is_exporting"}
# Wrong only under a mode the 8 combinations do not cover: of claim 4's two tests, only the exporters' fails.
GATE_ONLY = {"dynamo_compiling"}


def test_every_listed_variant_exists() -> None:
    stale = sorted(set(FAILURES) - {v.name for v in SOURCE_VARIANTS if not v.harmless})
    assert not stale, f"FAILURES lists variants that are not wrong source variants of tests/variants.py: {stale}"


@pytest.mark.parametrize("variant", SOURCE_VARIANTS, ids=[v.name for v in SOURCE_VARIANTS])
def test_variant_fails_exactly_the_right_claims(run_suite: RunSuite, tmp_path: Path, variant: Variant) -> None:
    if not variant.applies():
        pytest.skip(f"the installed golden file lacks {variant.needs!r}: no fork of it can be {variant.name}")
    modified = tmp_path / "modeling_qwen3_vl.py"
    modified.write_text(variant.make(golden_text()), encoding="utf-8")
    result = run_suite(*MODULES, GRID, modified=modified)
    rows = {claim: claim_row(result, claim) for claim in CLAIMS}
    if variant.harmless:
        expected: dict[str, str] = {}
    elif variant.name in FAILURES:
        expected = FAILURES[variant.name]
    else:
        # A wrong variant added to tests/variants.py without an entry above: something must fail there.
        failing = [claim for claim, row in rows.items() if " fails " in row and variant.place in row]
        assert failing, f"no claim fails naming {variant.place} for wrong variant {variant.name}:\n{result.stdout}"
        return
    # Two tests per DeepStack claim: golden's merger hooks and golden's condition hold for every
    # variant; claim 4's two tests fail together, but for a condition only the exporters see as wrong.
    failed = len(expected) + (GATED in expected and variant.name not in GATE_ONLY)
    result.assert_outcomes(passed=len(CLAIMS) + 2 - failed, failed=failed)
    for claim, row in rows.items():
        if claim not in expected:
            if claim == "golden-version":
                status = GOLDEN_VERSION_STATUS
            elif claim == GATED and variant.name not in GATE_HOLDS:
                status = " erratum "
            else:
                status = " holds "
            assert status in row, f"{claim} should say{status}for {variant.name}: {row}"
            if claim == "deepstack-condition" and variant.name in GATE_HOLDS | GATE_ONLY:
                assert "note: it additionally skips DeepStack under torch.export" in row, row
            continue
        assert " fails " in row, f"{claim} should fail for {variant.name}: {row}"
        assert expected[claim] in row, f"{claim} row lacks {expected[claim]!r}: {row}"
        assert variant.place in row, f"{claim} row does not name {variant.place}: {row}"
