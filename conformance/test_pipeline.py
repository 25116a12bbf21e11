"""Claims pipeline-deepstack-kept and pipeline-like-golden: the whole model, end to end.

Golden's whole model (the session's golden vision tower, and a language model with seeded weights
or a checkpoint's) runs three ways on one prompt with image tokens: its own PyTorch forward; the
language model fed the ONNX Runtime outputs of golden's export with every DeepStack output; and the
language model fed the report's export, ``pooled_embeds`` alone, as a pooled-only runtime does.
Relative L2 of the final hidden states and logits decides; top-1 agreement and KL are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model import pipeline as pl
from pytest_qwen3vl.onnxfile.names import split_outputs
from pytest_qwen3vl.runtimes.onnxruntime import run_outputs

pytestmark = pytest.mark.qwen3vl_export


@dataclass
class Pipeline:
    """The whole model, the prompt for the current grid, and golden's run on it."""

    model: Any
    ids: torch.Tensor
    grid_thw: torch.Tensor
    golden: pl.PipelineRun
    weights: str  # what the numbers stand for

    def gap(self, pooled: Any, deepstack: list[Any] | None) -> pl.PipelineGap:
        run = pl.language_run(self.model, self.ids, self.grid_thw, pooled, deepstack)
        return pl.pipeline_gap(run, self.golden, self.ids, self.model.config.image_token_id)


@pytest.fixture(scope="module")
def full_model(qwen3vl_golden_module, qwen3vl_config, qwen3vl_golden_vision, qwen3vl_settings) -> Any:
    try:
        return pl.build_full_model(qwen3vl_golden_module, qwen3vl_config, qwen3vl_golden_vision, qwen3vl_settings.seed)
    except ConfigError as exc:  # the config or checkpoint, not the modified file: no verdict
        pytest.skip(f"not run: {exc}")


@pytest.fixture(scope="module")
def pipeline(full_model, qwen3vl_config, qwen3vl_inputs, qwen3vl_settings) -> Pipeline:
    """Golden's whole-model forward on the prompt, once per grid for both claims (neither changes it)."""
    counts = pl.image_counts(qwen3vl_inputs.grid_thw, qwen3vl_config.merge_size)
    ids = pl.make_prompt(counts, full_model.config, qwen3vl_settings.seed)
    golden = pl.golden_run(full_model, ids, *qwen3vl_inputs.args)
    dtype = str(full_model.lm_head.weight.dtype).removeprefix("torch.")
    if qwen3vl_config.checkpoint is None:
        weights = "random tiny weights: the numbers show the mechanism, not a real model's accuracy"
    else:
        weights = f"weights of {qwen3vl_config.checkpoint.name}, language model in {dtype}"
    text = f"{ids.shape[1]} tokens, {sum(counts)} image tokens; {weights}"
    return Pipeline(full_model, ids, qwen3vl_inputs.grid_thw, golden, text)


@pytest.mark.qwen3vl_claim("pipeline-deepstack-kept")
def test_language_model_fed_every_deepstack_output_computes_golden(
    qwen3vl_export, qwen3vl_grid, qwen3vl_inputs, qwen3vl_config, pipeline, qwen3vl_record
):
    path = qwen3vl_export("golden", qwen3vl_grid, wrapper="all")
    pooled, deepstack = split_outputs(run_outputs(qwen3vl_export.session(path), *qwen3vl_inputs.args))
    layers = len(qwen3vl_config.vision["deepstack_visual_indexes"])
    assert len(deepstack) == layers, f"the DeepStack export has {len(deepstack)} DeepStack outputs, expected {layers}"
    gap = pipeline.gap(pooled, deepstack)
    tolerance = pl.tolerance(pipeline.model)
    assert gap.worst <= tolerance, (
        f"the language model fed the DeepStack export differs from golden's forward: {gap.text()} "
        f"(tolerance {tolerance:g})"
    )
    qwen3vl_record.holds(f"{gap.text()} (tolerance {tolerance:g}); {pipeline.weights}")


@pytest.mark.qwen3vl_claim("pipeline-like-golden")
def test_language_model_fed_pooled_embeds_only_is_not_golden(
    qwen3vl_export, qwen3vl_grid, qwen3vl_inputs, pipeline, qwen3vl_record
):
    path = qwen3vl_export("modified", qwen3vl_grid)
    pooled, deepstack = split_outputs(run_outputs(qwen3vl_export.session(path), *qwen3vl_inputs.args))
    gap = pipeline.gap(pooled, deepstack or None)
    tolerance = pl.tolerance(pipeline.model)
    qwen3vl_record.claim(
        reported=True, measured=gap.worst <= tolerance,
        detail=f"{len(deepstack)} DeepStack outputs; {gap.text()} (tolerance {tolerance:g}); {pipeline.weights}",
        said="behaves like golden",
    )
