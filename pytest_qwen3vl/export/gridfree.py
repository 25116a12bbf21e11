"""Grid-free tracing of ``Qwen3VLVisionModel``: one ONNX file for every grid.

This module imports torch at the top: ``export/recipes.py`` imports it only when it exports.

``torch.jit.trace`` records tensor operations only, and the vision model turns ``grid_thw`` into
Python numbers, so a trace is valid for its own grid only. ``grid_free(model)`` binds replacements
on the model *instance* that compute the same values from ``grid_thw`` with tensor operations
alone, so the tracer keeps them symbolic. Which places are replaced depends on how the model
computes its positions, read from the model itself (one of two layouts, else ``RecipeUnsupported``):

- methods ``fast_pos_embed_interpolate`` and ``rot_pos_emb`` (transformers 4.57): both replaced;
- ``vision_utils`` helpers that take precomputed ``interp_indices``, ``interp_weights`` and
  ``position_ids`` through the forward's keyword arguments (transformers 5.x): a thin instance
  ``forward`` computes the three by tensor operations and calls the class's forward with them.

In both, the attention's ``torch.split(..., lengths.tolist())`` is replaced by one attention call
under a block-diagonal mask. The replaced places do not run the model's own code, so
``export_recipe`` first checks the model's own eager forward against them (a fork that changed them is
refused). Everything else is the model's own code: the class's ``forward``
(with its DeepStack condition and the ``_skip_deepstack_export`` flag of a modified file), the
weights, and the helpers of the modeling file the model came from (``apply_rotary_pos_emb_vision``,
``eager_attention_forward``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import MethodType
from typing import Any, NamedTuple

import torch

from pytest_qwen3vl.errors import RecipeUnsupported

# The modeling file's names that take precomputed position tensors through ``forward``'s kwargs.
PRECOMPUTING_HELPERS = ("get_vision_interpolation_indices_and_weights", "get_vision_position_ids")

class PatchCoords(NamedTuple):
    """Per patch, in the model's patch order: full-resolution row and column, and its image's H and W."""

    row: torch.Tensor
    col: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def patch_coords(grid_thw: torch.Tensor, merge: int) -> PatchCoords:
    """Coordinates of every patch of every image, built from ``grid_thw`` by tensor operations.

    Patches come image after image, frame after frame, and within a frame in merge order
    (block row, block column, row in block, column in block): the order of ``pixel_values``.
    The image of a patch is found by comparing its index with the images' cumulative sizes
    (no ``repeat_interleave``, no Python loop over images), so the number of images stays free.
    An H or W that is not a multiple of ``merge`` (transformers' ``view`` raises there) must not
    give wrong positions: it makes an index into a one-element tensor go out of range, which
    raises in PyTorch and in ONNX Runtime. (A shape check with ``reshape`` is not enough: ONNX
    Runtime's basic graph optimisations drop a 1-D to 1-D Reshape.)
    """
    t, h, w = grid_thw.unbind(1)
    sizes = t * h * w
    ends = sizes.cumsum(0)
    misaligned = (h % merge + w % merge).sum()
    guard = torch.zeros(1, dtype=ends.dtype, device=grid_thw.device)[misaligned]  # 0, or out of range
    index = torch.arange(ends[-1], device=grid_thw.device) + guard
    image = (index[:, None] >= ends[None, :]).sum(1)
    height, width = h[image], w[image]
    in_frame = (index - (ends - sizes)[image]) % (height * width)
    block, in_block = in_frame // (merge * merge), in_frame % (merge * merge)
    blocks_per_row = width // merge
    row = (block // blocks_per_row) * merge + in_block // merge
    col = (block % blocks_per_row) * merge + in_block % merge
    return PatchCoords(row, col, height, width)


def sample_point(index: torch.Tensor, size: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The align-corners sample point ``index * (side - 1) / (size - 1)`` of each position as its integer
    part (int64) and its fraction (float32, in [0, 1)).

    Both come from integer arithmetic: transformers computes the point in float32 (``linspace``, or a
    product and a quotient), which a runtime at reduced precision computes in its own precision, and
    points up to ``side - 1`` (47) lose their fraction there (measured: the grid-free file at relative
    L2 1e-2 on OpenVINO f16, ten times the arithmetic's own cost, 0.1 at bf16), while an int-to-float
    cast chain (``x.int()`` then back to float) is what ONNX Runtime's optimiser removes when it
    converts to fp16 (relative L2 0.8). Here only the fraction's one division is in floating point:
    within one float32 rounding of transformers' value in fp32, and as exact as the precision allows
    elsewhere.
    """
    scaled = index.long() * (side - 1)
    steps = torch.clamp(size.long() - 1, min=1)
    floor = torch.div(scaled, steps, rounding_mode="floor")
    return floor, (scaled - floor * steps).to(torch.float32) / steps.to(torch.float32)


def fast_pos_embed_interpolate(self: Any, grid_thw: torch.Tensor) -> torch.Tensor:
    """Bilinear (align-corners) interpolation of the position table at each patch, in patch order.

    transformers' weights per patch (sample points from ``sample_point``, weights in float32, the four
    terms summed in the same order), evaluated directly at the merge-ordered, frame-repeated patch
    positions instead of being computed row-major and permuted.
    """
    side = self.num_grid_per_side
    coords = patch_coords(grid_thw, self.spatial_merge_size)
    h_floor, dh = sample_point(coords.row, coords.height, side)
    w_floor, dw = sample_point(coords.col, coords.width, side)
    h_ceil, w_ceil = (h_floor + 1).clip(max=side - 1), (w_floor + 1).clip(max=side - 1)
    indices = torch.stack([
        h_floor * side + w_floor, h_floor * side + w_ceil, h_ceil * side + w_floor, h_ceil * side + w_ceil,
    ])
    weights = torch.stack([(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw])
    terms = self.pos_embed(indices) * weights.to(self.pos_embed.weight.dtype)[:, :, None]
    return terms[0] + terms[1] + terms[2] + terms[3]


def rot_pos_emb(self: Any, grid_thw: torch.Tensor) -> torch.Tensor:
    """Rotary angles (row frequencies, then column frequencies) of each patch.

    transformers looks rows of ``outer(arange(max_hw), inv_freq)`` up; each entry is the single
    product ``position * inv_freq``, so computing that product per patch gives the same bits
    without ``max_hw`` (an ``.item()``) or the per-image loop.
    """
    inv_freq = self.rotary_pos_emb.inv_freq
    coords = patch_coords(grid_thw, self.spatial_merge_size)
    rows = coords.row[:, None].to(inv_freq.dtype) * inv_freq
    cols = coords.col[:, None].to(inv_freq.dtype) * inv_freq
    return torch.cat((rows, cols), dim=1)


def interpolation_axis(index: torch.Tensor, size: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two table rows (or columns) each position reads and their bilinear weights, align-corners.

    transformers 5.x's ``vision_utils`` per patch, the sample point from ``sample_point``.
    """
    floor, fraction = sample_point(index, size, side)
    offsets = torch.arange(0, 2, device=index.device)
    taps = (floor[:, None] + offsets).clamp(0, side - 1)
    weights = (1 - (fraction[:, None] - offsets).abs()).clamp(min=0)
    return taps, weights


def position_tensors(model: Any, grid_thw: torch.Tensor) -> dict[str, torch.Tensor]:
    """``interp_indices``, ``interp_weights`` and ``position_ids`` of every patch, from ``grid_thw``
    by tensor operations: the keyword arguments 5.x's forward takes instead of computing them."""
    side = model.num_grid_per_side
    coords = patch_coords(grid_thw, model.spatial_merge_size)
    row_taps, row_weights = interpolation_axis(coords.row, coords.height, side)
    col_taps, col_weights = interpolation_axis(coords.col, coords.width, side)
    return {
        "interp_indices": (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4),
        "interp_weights": (row_weights[:, :, None] * col_weights[:, None, :]).reshape(-1, 4),
        "position_ids": torch.stack((coords.row, coords.col), dim=-1),
    }


def precomputed_forward(self: Any, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
    """The class's own ``forward``, given the position tensors so that its helpers do not compute them."""
    return type(self).forward(self, hidden_states, grid_thw, **position_tensors(self, grid_thw), **kwargs)


def block_diagonal_mask(cu_seqlens: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (1, 1, L, L) mask: 0 within a segment of ``cu_seqlens`` (one frame), dtype's min elsewhere.

    Masked scores become exact zeros after softmax, so attending over all patches with this mask
    equals attending within each frame separately, without splitting by ``lengths.tolist()``.
    """
    index = torch.arange(length, device=cu_seqlens.device)
    segment = (index[:, None] >= cu_seqlens[None, 1:]).sum(1)
    same = segment[:, None] == segment[None, :]
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=cu_seqlens.device)
    return torch.where(same, torch.zeros((), dtype=dtype, device=cu_seqlens.device), blocked)[None, None]


def attention_forward(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    rotary_pos_emb: torch.Tensor | None = None,
    *,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    max_seqlen: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """``Qwen3VLVisionAttention.forward`` with one attention call under a block-diagonal mask.

    ``rotary_pos_emb`` (4.57) and ``max_seqlen`` (5.x) are what the blocks pass besides; the cos and
    sin come in ``position_embeddings`` on both, and ``max_seqlen`` serves flash attention only.
    Uses the helpers of the modeling file the module was defined in, so a fork's versions apply.
    Flash attention takes ``cu_seqlens`` itself and cannot take this mask: it is refused.
    """
    modeling = sys.modules[type(self).__module__]
    implementation = self.config._attn_implementation
    if implementation not in ("eager", "sdpa"):
        raise NotImplementedError(f"grid_free supports eager and sdpa attention, not {implementation!r}")
    seq_length = hidden_states.shape[0]
    query, key, value = (
        self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    )
    cos, sin = position_embeddings
    query, key = modeling.apply_rotary_pos_emb_vision(query, key, cos, sin)
    query, key, value = (x.transpose(0, 1).unsqueeze(0) for x in (query, key, value))
    attention = (
        modeling.eager_attention_forward
        if implementation == "eager"
        else modeling.ALL_ATTENTION_FUNCTIONS[implementation]
    )
    output, _ = attention(
        self,
        query,
        key,
        value,
        attention_mask=block_diagonal_mask(cu_seqlens, seq_length, query.dtype),
        scaling=self.scaling,
        dropout=0.0 if not self.training else self.attention_dropout,
        is_causal=False,
        **kwargs,
    )
    return self.proj(output.reshape(seq_length, -1).contiguous())


def position_replacements(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, Any]]:
    """What to bind on ``model`` so its positions follow ``grid_thw`` symbolically, chosen by what the
    model has; raises ``RecipeUnsupported`` naming what it found when it is neither known layout."""
    methods = [name for name in ("fast_pos_embed_interpolate", "rot_pos_emb") if callable(getattr(model, name, None))]
    if len(methods) == 2:
        return [(model, "fast_pos_embed_interpolate", fast_pos_embed_interpolate), (model, "rot_pos_emb", rot_pos_emb)]
    modeling = sys.modules[type(model).__module__]
    missing = [name for name in PRECOMPUTING_HELPERS if not hasattr(modeling, name)]
    interpolation = (getattr(model, "interpolation_mode", None), getattr(model, "interpolation_align_corners", None))
    if missing:
        raise RecipeUnsupported(
            f"{type(model).__name__} has {' and '.join(methods) or 'neither'} of fast_pos_embed_interpolate and "
            f"rot_pos_emb, and its modeling file no {' or '.join(missing)}: the grid-free recipe does not know "
            "where its positions come from"
        )
    if interpolation != ("bilinear", True):
        raise RecipeUnsupported(
            f"{type(model).__name__} interpolates its position table with mode, align_corners = {interpolation}; "
            "the grid-free recipe reproduces ('bilinear', True) only"
        )
    return [(model, "forward", precomputed_forward)]


@contextlib.contextmanager
def grid_free(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Bind the grid-free replacements on ``model`` and its attention modules, restore on exit.

    Only instance attributes change (the class, the modeling file and the weights do not); an
    instance attribute that was there before is put back, one that was not is removed.
    """
    targets = [*position_replacements(model), *((block.attn, "forward", attention_forward) for block in model.blocks)]
    missing = object()
    saved = [(module, name, module.__dict__.get(name, missing)) for module, name, _ in targets]
    try:
        for module, name, function in targets:
            setattr(module, name, MethodType(function, module))
        yield model
    finally:
        for module, name, old in reversed(saved):
            if old is missing:
                module.__dict__.pop(name, None)
            else:
                setattr(module, name, old)
