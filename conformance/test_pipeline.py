"""Claims pipeline-deepstack-kept and pipeline-like-golden: the whole model, end to end.

Golden's whole model (the session's golden vision tower, and a language model with seeded weights
or a checkpoint's) runs three ways on one prompt with image tokens: its own PyTorch forward; the
language model fed the ONNX Runtime outputs of golden's export with every DeepStack output; and the
language model fed the report's export, ``pooled_embeds`` alone, as a pooled-only runtime does.
Relative L2 of the final hidden states and logits decides; top-1 agreement and KL are shown.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_qwen3vl.errors import ConfigError, NotRunnable, ProbeFailed
from pytest_qwen3vl.judge.pipeline import DEEPSTACK, POOLED
from pytest_qwen3vl.model.pipeline import PipelineGap

pytestmark = pytest.mark.qwen3vl_export


@pytest.fixture(scope="module")
def pipeline(qwen3vl_export, qwen3vl_settings) -> dict[str, Any]:
    """Per grid of the run: the prompt, the tolerance and both gaps, measured once per run (by one
    process, whatever ``-n`` says: at a released size two whole models do not fit beside each other)."""
    try:
        return qwen3vl_export.pipeline(qwen3vl_settings.grids)
    except ConfigError as exc:  # the config or checkpoint, not the modified file: no verdict
        pytest.skip(f"not run: {exc}")
    except ProbeFailed as exc:  # our own process failed: no verdict either
        raise NotRunnable(f"not run: {exc}") from exc


def gap_of(measured: dict[str, Any]) -> tuple[int, PipelineGap]:
    """The DeepStack outputs the file fed, and its gap."""
    fields = dict(measured)
    return fields.pop("deepstack_outputs"), PipelineGap(**fields)


@pytest.mark.qwen3vl_claim("pipeline-deepstack-kept")
def test_language_model_fed_every_deepstack_output_computes_golden(
    qwen3vl_export, qwen3vl_grid, qwen3vl_config, pipeline, qwen3vl_record
):
    qwen3vl_export("golden", qwen3vl_grid, wrapper="all")  # its own failure first, in its own words
    here = pipeline[qwen3vl_grid.text]
    outputs, gap = gap_of(here["gaps"][DEEPSTACK])
    layers = len(qwen3vl_config.vision["deepstack_visual_indexes"])
    assert outputs == layers, f"the DeepStack export has {outputs} DeepStack outputs, expected {layers}"
    tolerance = here["tolerance"]
    assert gap.worst <= tolerance, (
        f"the language model fed the DeepStack export differs from golden's forward: {gap.text()} "
        f"(tolerance {tolerance:g})"
    )
    qwen3vl_record.holds(f"{gap.text()} (tolerance {tolerance:g}); {here['prompt']}")


@pytest.mark.qwen3vl_claim("pipeline-like-golden")
def test_language_model_fed_pooled_embeds_only_is_not_golden(qwen3vl_export, qwen3vl_grid, pipeline, qwen3vl_record):
    qwen3vl_export("modified", qwen3vl_grid)  # the modified file's own failure first, in its own words
    here = pipeline[qwen3vl_grid.text]
    outputs, gap = gap_of(here["gaps"][POOLED])
    tolerance = here["tolerance"]
    qwen3vl_record.claim(
        reported=True, measured=gap.worst <= tolerance,
        detail=f"{outputs} DeepStack outputs; {gap.text()} (tolerance {tolerance:g}); {here['prompt']}",
        said="behaves like golden",
    )
