"""Claim runtime-equivalence: when not exporting, the modified model behaves and weighs as golden.

Outputs are compared on every grid of the sweep (and the run's): a fork that swaps h and w in the
position-embedding interpolation is bit-identical on a square grid and wrong on 1x16x40.
"""

from __future__ import annotations

import pytest
import torch

from pytest_qwen3vl.model.inputs import VisionInputs
from pytest_qwen3vl.model.outputs import deepstack, merged

pytestmark = pytest.mark.qwen3vl_claim("runtime-equivalence")


def test_state_dicts_match_key_for_key(qwen3vl_golden_vision, qwen3vl_modified_vision, qwen3vl_record):
    golden = qwen3vl_golden_vision.state_dict()
    modified = qwen3vl_modified_vision.state_dict()
    only_golden = sorted(set(golden) - set(modified))
    only_modified = sorted(set(modified) - set(golden))
    assert not only_golden and not only_modified, (
        f"state dict keys differ: only in golden {only_golden[:5]}, only in modified {only_modified[:5]}"
    )
    different = [key for key in golden if not torch.equal(golden[key], modified[key])]
    assert not different, f"state dict values differ at {different[:5]}"
    golden_buffers = dict(qwen3vl_golden_vision.named_buffers())
    modified_buffers = dict(qwen3vl_modified_vision.named_buffers())
    assert golden_buffers.keys() == modified_buffers.keys(), "the models hold different buffers"
    bad_buffers = [k for k, v in golden_buffers.items() if not torch.equal(v, modified_buffers[k])]
    assert not bad_buffers, f"buffers differ (non-persistent ones are computed by each file): {bad_buffers}"
    qwen3vl_record.holds(f"{len(golden)} state-dict tensors and {len(golden_buffers)} buffers equal")


def test_outputs_bit_identical(qwen3vl_eager_runs, qwen3vl_eager_inputs, qwen3vl_record):
    """Both forwards with the export flag unset, as the other eager claims read them."""

    def check(qwen3vl_inputs: VisionInputs) -> str:
        golden_outputs = qwen3vl_eager_runs("golden", qwen3vl_inputs.grid).outputs
        modified_outputs = qwen3vl_eager_runs("modified", qwen3vl_inputs.grid).outputs
        golden_pooled, golden_deepstack = merged(golden_outputs), deepstack(golden_outputs)
        modified_pooled, modified_deepstack = merged(modified_outputs), deepstack(modified_outputs)
        assert modified_pooled.shape == golden_pooled.shape, (
            f"pooled shape {tuple(modified_pooled.shape)} != golden {tuple(golden_pooled.shape)}"
        )
        max_abs = (modified_pooled - golden_pooled).abs().max().item()
        assert torch.equal(modified_pooled, golden_pooled), (
            f"pooled embeddings differ from golden: max abs {max_abs:.3g}"
        )
        assert len(modified_deepstack) == len(golden_deepstack), (
            f"{len(modified_deepstack)} DeepStack features, golden has {len(golden_deepstack)}"
        )
        for index, (mine, theirs) in enumerate(zip(modified_deepstack, golden_deepstack, strict=True)):
            assert torch.equal(mine, theirs), (
                f"DeepStack feature {index} differs from golden: max abs {(mine - theirs).abs().max().item():.3g}"
            )
        return (
            f"pooled {tuple(golden_pooled.shape)} and {len(golden_deepstack)} DeepStack features bit-identical"
        )

    qwen3vl_record.on_grids(qwen3vl_eager_inputs, check)
