"""Claims vision-rope, vision-rope-dynamic, vision-data-flow: the vision tower's math, which the report calls shared.

So each test runs on golden and on modified. What the report states is re-derived in float64 from the
config (``pytest_qwen3vl.model.references``) and compared with what the model computed in a real forward,
caught with forward hooks.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
import torch

from pytest_qwen3vl.model.build import deepstack_export_flag, vision_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import VisionInputs, make_inputs
from pytest_qwen3vl.model.outputs import deepstack as deepstack_of
from pytest_qwen3vl.model.outputs import merged
from pytest_qwen3vl.model.references import (
    AttentionReferences,
    Call,
    frame_lengths,
    interpolated_pos_embed,
    only_call,
    record_calls,
    rope_inv_freq,
    vision_cos_sin,
)

THETA = 1e4  # the report's vision RoPE base
# Grids with other largest sides than the default: wider than high; several images, the largest side
# in the second one, which has two frames.
DYNAMIC_GRIDS = ("1,8,12", "1,6,4+2,10,8")

which_model = pytest.mark.parametrize("which", ["golden", "modified"])


def _model(request: pytest.FixtureRequest, which: str) -> torch.nn.Module:
    return request.getfixturevalue(f"qwen3vl_{which}_vision")


def _rotary_dim(vision: Any) -> int:
    """The rotary dimension d: half the attention head size (rows and columns share the head)."""
    return vision.hidden_size // vision.num_heads // 2


def _max_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected).abs().max().item()


def _position_embeddings(call: Call, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) a block or attention received as its ``position_embeddings`` keyword."""
    embeddings = call.kwargs.get("position_embeddings")
    assert embeddings is not None, f"{which}: {call.name} got no position_embeddings keyword"
    return embeddings


def _check_block0_cos_sin(call: Call, grid: Grid, vision: Any, which: str) -> float:
    """cos/sin handed to the first block's attention equal the float64 re-derivation; returns the error."""
    cos, sin = _position_embeddings(call, which)
    want_cos, want_sin = vision_cos_sin(grid.images, vision.spatial_merge_size, _rotary_dim(vision), THETA)
    assert cos.shape == want_cos.shape, (
        f"{which} {grid.id}: cos has shape {tuple(cos.shape)}, expected {tuple(want_cos.shape)}"
    )
    err = max(_max_err(cos, want_cos), _max_err(sin, want_sin))
    assert err < 1e-5, (
        f"{which} {grid.id}: block-0 cos/sin differ from theta=1e4, freqs = seq (outer) inv_freq by {err:.3g}"
    )
    return err


@pytest.fixture(scope="module")
def attention_references() -> AttentionReferences:
    """The float64 attention references, shared by golden's and modified's vision-rope on equal inputs."""
    return AttentionReferences()


@which_model
@pytest.mark.qwen3vl_claim("vision-rope")
def test_vision_rope_rotates_q_and_k(
    request, which, qwen3vl_config, qwen3vl_eager_inputs, qwen3vl_eager_runs, attention_references, qwen3vl_record
):
    """The first block's attention call of the forward the other eager claims read (flag unset)."""

    def check(qwen3vl_inputs: VisionInputs) -> str:
        model = _model(request, which)
        vision = vision_config(qwen3vl_config)
        dim = _rotary_dim(vision)
        inv_freq = model.rotary_pos_emb.inv_freq
        want = rope_inv_freq(dim, THETA)
        assert inv_freq.shape == want.shape, (
            f"{which}: inv_freq has shape {tuple(inv_freq.shape)}, expected ({dim // 2},)"
        )
        inv_err = ((inv_freq.double() - want).abs() / want).max().item()
        assert inv_err < 1e-6, (
            f"{which}: inv_freq is not 1e4^(-2i/{dim}): {inv_freq.tolist()} vs {want.tolist()}"
        )
        call = only_call(qwen3vl_eager_runs(which, qwen3vl_inputs.grid).calls, "blocks.0.attn")
        trig_err = _check_block0_cos_sin(call, qwen3vl_inputs.grid, vision, which)
        images = qwen3vl_inputs.grid.images
        cos, sin = vision_cos_sin(images, vision.spatial_merge_size, dim, THETA)
        want_out = attention_references(
            model.blocks[0].attn, call.args[0], cos, sin, vision.num_heads, frame_lengths(images)
        )
        attn_err = _max_err(call.output, want_out) / want_out.abs().max().item()
        assert attn_err < 1e-4, (
            f"{which}: block-0 attention is not softmax(rot(q) rot(k)^T) v with cos/sin on q and k: "
            f"relative error {attn_err:.3g}"
        )
        return (
            f"inv_freq = 1e4^(-2i/{dim}), {dim // 2} frequencies; block-0 cos/sin within {trig_err:.1e}; "
            f"attention with rotated q, k within {attn_err:.1e}"
        )

    qwen3vl_record.on_grids(qwen3vl_eager_inputs, check)


@which_model
@pytest.mark.qwen3vl_claim("vision-rope-dynamic")
def test_vision_rope_table_is_made_per_forward(request, which, qwen3vl_config, qwen3vl_settings, qwen3vl_record):
    model = _model(request, which)
    vision = vision_config(qwen3vl_config)
    rotary_keys = [key for key in model.state_dict() if key.startswith("rotary_pos_emb.")]
    assert not rotary_keys, f"{which}: the state dict stores a rotary table: {rotary_keys}"
    rotary_buffers = dict(model.rotary_pos_emb.named_buffers())
    # 4.57.6 holds inv_freq only; 5.x also a copy, original_inv_freq, kept for dynamic RoPE updates.
    tables = {k: tuple(v.shape) for k, v in rotary_buffers.items() if v.dim() != 1}
    assert "inv_freq" in rotary_buffers and not tables, (
        f"{which}: the rotary embedding holds {[(k, tuple(v.shape)) for k, v in rotary_buffers.items()]}, "
        "expected 1-D frequency vectors only"
    )
    inv_freq = rope_inv_freq(_rotary_dim(vision), THETA)
    sides = []
    for text in DYNAMIC_GRIDS:
        grid = Grid.parse(text)
        inputs = make_inputs(grid, qwen3vl_config, qwen3vl_settings.seed)
        with record_calls(model, ["rotary_pos_emb", "blocks.0.attn"]) as calls, torch.inference_mode():
            model(*inputs.args)
        made = only_call(calls, "rotary_pos_emb")
        sides.append(f"{grid.id} -> {_rotary_made(made, grid, inv_freq, which)}")
        _check_block0_cos_sin(only_call(calls, "blocks.0.attn"), grid, vision, which)
    qwen3vl_record.holds(
        f"no rotary table in the state dict, buffers {sorted(rotary_buffers)} non-persistent and 1-D; "
        f"made per forward: {', '.join(sides)}"
    )


def _rotary_made(made: Call, grid: Grid, inv_freq: torch.Tensor, which: str) -> str:
    """What ``rotary_pos_emb`` computed in one forward, checked against the grid.

    4.57.6 makes a table ``seq (outer) inv_freq`` for the largest side, which the model then indexes;
    5.x computes (cos, sin) directly for the grid's N patches from their (row, column) positions.
    Either is made per forward for this grid; the cos/sin the blocks get are checked separately.
    """
    if isinstance(made.output, tuple):
        rows = grid.num_patches
        shapes = [tuple(part.shape) for part in made.output]
        assert all(shape[0] == rows for shape in shapes), (
            f"{which} {grid.id}: rotary cos/sin made for {shapes}, expected one row per patch ({rows})"
        )
        return f"cos/sin for {rows} patches"
    seqlen = int(made.args[0])
    largest = max(max(h, w) for _, h, w in grid.images)
    assert seqlen == largest, f"{which} {grid.id}: rotary table made for {seqlen} positions, largest side {largest}"
    want = torch.outer(torch.arange(largest, dtype=torch.float64), inv_freq)
    assert made.output.shape == want.shape and _max_err(made.output, want) < 1e-5, (
        f"{which} {grid.id}: the rotary table is not seq (outer) inv_freq"
    )
    return f"table for the largest side, {seqlen}"


def _expected_order(vision: Any) -> list[str]:
    """Blocks in order, each DeepStack merger right after the block it taps, then the merger."""
    indexes = list(vision.deepstack_visual_indexes)
    order = []
    for layer in range(vision.depth):
        order.append(f"blocks.{layer}")
        if layer in indexes:
            order.append(f"deepstack_merger_list.{indexes.index(layer)}")
    return [*order, "merger"]


@which_model
@pytest.mark.qwen3vl_claim("vision-data-flow")
def test_vision_data_flow(request, which, qwen3vl_config, qwen3vl_eager_inputs, qwen3vl_record):
    def check(qwen3vl_inputs: VisionInputs) -> str:
        model = _model(request, which)
        vision = vision_config(qwen3vl_config)
        indexes = list(vision.deepstack_visual_indexes)
        depth = vision.depth
        tail = _expected_order(vision)
        names = ["patch_embed", "pos_embed", "rotary_pos_emb", *tail]
        with record_calls(model, names) as calls, torch.inference_mode(), deepstack_export_flag(model, None):
            outputs = model(*qwen3vl_inputs.args)
        pooled, deepstack = merged(outputs), deepstack_of(outputs)
        order = [call.name for call in calls]
        assert order[:1] == ["patch_embed"] and sorted(order[1:3]) == ["pos_embed", "rotary_pos_emb"], (
            f"{which}: the forward starts {order[:3]}, expected patch_embed, then pos_embed and rotary_pos_emb"
        )
        if order[3:] != tail:
            ran_after = {name: prev for prev, name in pairwise(order) if name.startswith("deepstack_merger_list.")}
            pytest.fail(
                f"{which}: DeepStack mergers ran after {ran_after}, expected each right after the block it taps "
                f"({indexes}); modules ran in the order {order[3:]}", pytrace=False,
            )
        call = {name: only_call(calls, name) for name in names}

        assert torch.equal(call["patch_embed"].args[0], qwen3vl_inputs.pixel_values), (
            f"{which}: patch_embed did not receive pixel_values"
        )
        added = call["blocks.0"].args[0].double() - call["patch_embed"].output.double()
        want_pos = interpolated_pos_embed(model.pos_embed.weight, qwen3vl_inputs.grid.images, vision.spatial_merge_size)
        pos_err = _max_err(added, want_pos) / call["blocks.0"].args[0].abs().max().item()
        assert pos_err < 1e-5, (
            f"{which}: block 0's input is not patch_embed + the interpolated pos_embed (relative error {pos_err:.3g})"
        )
        first_cos, first_sin = _position_embeddings(call["blocks.0"], which)
        for layer in range(depth):
            cos, sin = _position_embeddings(call[f"blocks.{layer}"], which)
            assert torch.equal(cos, first_cos) and torch.equal(sin, first_sin), (
                f"{which}: blocks.{layer} gets other rotary cos/sin than blocks.0"
            )
            if layer:
                assert torch.equal(call[f"blocks.{layer}"].args[0], call[f"blocks.{layer - 1}"].output), (
                    f"{which}: blocks.{layer} does not take blocks.{layer - 1}'s output"
                )
        for k, layer in enumerate(indexes):
            merger = call[f"deepstack_merger_list.{k}"]
            assert torch.equal(merger.args[0], call[f"blocks.{layer}"].output), (
                f"{which}: deepstack_merger_list.{k} does not tap blocks.{layer}'s output"
            )
            assert torch.equal(deepstack[k], merger.output), (
                f"{which}: DeepStack feature {k} is not deepstack_merger_list.{k}'s output"
            )
        assert torch.equal(call["merger"].args[0], call[f"blocks.{depth - 1}"].output), (
            f"{which}: the merger does not take the last block's output"
        )
        assert torch.equal(pooled, call["merger"].output), f"{which}: the pooled output is not the merger's output"
        return (
            f"patch_embed -> pos_embed (+, within {pos_err:.1e}), rotary_pos_emb -> blocks.0..{depth - 1} "
            f"(DeepStack mergers right after blocks {indexes}) -> merger -> pooled {tuple(pooled.shape)}"
        )

    qwen3vl_record.on_grids(qwen3vl_eager_inputs, check)
