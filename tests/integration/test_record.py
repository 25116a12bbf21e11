"""``qwen3vl_record.claim`` decides holds or erratum on values, so no erratum can go stale."""

from __future__ import annotations

import pytest

CLAIM_TEST = """
import pytest

@pytest.mark.qwen3vl_claim("golden-onnx-outputs")
def test_outputs(qwen3vl_record):
    qwen3vl_record.claim(reported={reported}, measured={measured}, detail="{detail}", said="{said}")
"""


def row(result: pytest.RunResult, claim: str) -> str:
    return next(line for line in result.outlines if f" {claim} " in line)


@pytest.mark.parametrize(
    ("reported", "measured", "status"),
    [("3", "3", "holds"), ("3", "4", "erratum"), ("(1, 25, 25)", "(1, 24, 24)", "erratum"), ("True", "True", "holds")],
)
def test_the_values_decide(pytester: pytest.Pytester, reported: str, measured: str, status: str) -> None:
    pytester.makepyfile(CLAIM_TEST.format(reported=reported, measured=measured, detail="what was seen", said="3 outs"))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    line = row(result, "golden-onnx-outputs")
    assert f" {status} " in line and "what was seen" in line
    assert ("report says: 3 outs" in result.stdout.str()) == (status == "erratum")


def test_equal_values_in_different_words_hold(pytester: pytest.Pytester) -> None:
    """The guard the old ``erratum`` call had compared texts: 3 against "3 outputs" never matched."""
    pytester.makepyfile(CLAIM_TEST.format(reported="3", measured="len([1, 2, 3])", detail="3 outputs", said="3"))
    result = pytester.runpytest()
    assert " holds " in row(result, "golden-onnx-outputs")


def test_a_claim_the_test_is_not_marked_for_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.qwen3vl_claim("golden-onnx-outputs")
        def test_outputs(qwen3vl_record):
            qwen3vl_record.claim(reported=1, measured=1, claim="dynamic-n")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not marked qwen3vl_claim('dynamic-n')*"])
