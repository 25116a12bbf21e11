"""Golden and modified models share their weights; inputs are seeded."""

from __future__ import annotations

import copy

import torch

from pytest_qwen3vl.model.build import VisionPair, build_pair, deepstack_export_flag
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.source.files import installed_golden_path


def test_every_parameter_and_persistent_buffer_is_the_same_tensor(pair: VisionPair) -> None:
    golden = pair.golden.state_dict(keep_vars=True)
    modified = pair.modified.state_dict(keep_vars=True)
    assert pair.unshared == []
    assert golden.keys() == modified.keys()
    assert all(modified[key] is golden[key] for key in golden)


def test_non_persistent_buffers_are_computed_by_each_file_and_equal(pair: VisionPair) -> None:
    golden = dict(pair.golden.named_buffers())
    modified = dict(pair.modified.named_buffers())
    assert list(golden) == ["rotary_pos_emb.inv_freq"]
    assert modified["rotary_pos_emb.inv_freq"] is not golden["rotary_pos_emb.inv_freq"]
    assert torch.equal(modified["rotary_pos_emb.inv_freq"], golden["rotary_pos_emb.inv_freq"])


def test_models_are_eval_float32_cpu(pair: VisionPair) -> None:
    for model in (pair.golden, pair.modified):
        assert not model.training
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_weights_follow_the_seed(pair: VisionPair) -> None:
    golden_module = type(pair.golden).__module__
    import sys

    module = sys.modules[golden_module]
    spec = resolve_config("tiny", installed_golden_path().parent)
    again = build_pair(module, module, spec, 0).golden
    other = build_pair(module, module, spec, 1).golden
    weight = "blocks.0.attn.qkv.weight"
    assert torch.equal(again.state_dict()[weight], pair.golden.state_dict()[weight])
    assert not torch.equal(other.state_dict()[weight], pair.golden.state_dict()[weight])


def test_inputs_follow_seed_and_grid() -> None:
    spec = resolve_config("tiny", installed_golden_path().parent)
    grid = Grid.parse("1,8,8+2,4,4")
    first, again = make_inputs(grid, spec, 0), make_inputs(grid, spec, 0)
    assert first.pixel_values.shape == (64 + 32, 1536) and first.pixel_values.dtype == torch.float32
    assert first.grid_thw.tolist() == [[1, 8, 8], [2, 4, 4]] and first.grid_thw.dtype == torch.int64
    assert torch.equal(first.pixel_values, again.pixel_values)
    assert not torch.equal(first.pixel_values, make_inputs(grid, spec, 1).pixel_values)


def test_export_flag_is_restored(pair: VisionPair) -> None:
    model = pair.modified
    assert "_skip_deepstack_export" not in model.__dict__
    with deepstack_export_flag(model, True):
        assert model._skip_deepstack_export is True
        with deepstack_export_flag(model, None):
            assert not hasattr(model, "_skip_deepstack_export")
        assert model._skip_deepstack_export is True
    assert "_skip_deepstack_export" not in model.__dict__


def test_an_attention_reference_is_shared_only_on_equal_inputs_and_the_same_weights(pair: VisionPair) -> None:
    """Golden's and modified's first attention share their weights: one float64 reference serves both."""
    from pytest_qwen3vl.model.references import AttentionReferences, vision_attention_reference

    references = AttentionReferences()
    hidden = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    cos, sin = torch.ones(16, 16, dtype=torch.float64), torch.zeros(16, 16, dtype=torch.float64)
    golden, modified = pair.golden.blocks[0].attn, pair.modified.blocks[0].attn
    first = references(golden, hidden, cos, sin, 4, [16])
    assert torch.equal(first, vision_attention_reference(golden, hidden, cos, sin, 4, [16]))
    assert references(modified, hidden.clone(), cos, sin, 4, [16]) is first
    assert references(modified, hidden + 1, cos, sin, 4, [16]) is not first
    assert references(modified, hidden, cos, sin, 4, [8, 8]) is not first
    copied = copy.deepcopy(golden)  # equal weights, but its own tensors: a file could change them
    assert references(copied, hidden, cos, sin, 4, [16]) is not first
