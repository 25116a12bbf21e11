"""Claims output-contract, input-contract, patch-dim: what the vision tower takes and returns, golden and modified.

Expected shapes are computed here from the grid and the config; the patch layout is checked against
a float64 linear map of the patch embedding's weights.
"""

from __future__ import annotations

import pytest
import torch

from pytest_qwen3vl.errors import OutputContractError
from pytest_qwen3vl.model.build import deepstack_export_flag, vision_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import VisionInputs, make_inputs, patch_dim
from pytest_qwen3vl.model.outputs import deepstack, describe, merged, pre_merger, structure
from pytest_qwen3vl.model.references import patch_embed_reference

# The report's patch geometry: 1536 = 3 x p_t x p^2 with p = 16, p_t = 2.
REPORTED_CHANNELS, REPORTED_TEMPORAL, REPORTED_PATCH, REPORTED_WIDTH = 3, 2, 16, 1536
# One image with an int64 grid, then several in one call (one with two frames) with an int32 grid.
CONTRACT_CASES = (("1,8,8", "int64"), ("1,8,12+2,4,6+1,4,4", "int32"))

which_model = pytest.mark.parametrize("which", ["golden", "modified"])


def _model(request: pytest.FixtureRequest, which: str) -> torch.nn.Module:
    return request.getfixturevalue(f"qwen3vl_{which}_vision")


@which_model
@pytest.mark.qwen3vl_claim("output-contract")
def test_forward_returns_pooled_and_deepstack_list(
    request, which, qwen3vl_config, qwen3vl_eager_inputs, qwen3vl_eager_runs, qwen3vl_settings, qwen3vl_record
):
    """On every eager grid the forward gives the merged embeddings and the DeepStack list, in golden's
    structure; what ``outputs[0]`` (the report's wrapper) then is, is measured once: the merged
    embeddings on 4.57.6, ``last_hidden_state`` before the merger on 5.x, an erratum of the report."""
    taken: dict[str, tuple[str, tuple[int, ...]]] = {}
    said: dict[str, tuple[str, tuple[int, ...]]] = {}
    kinds: dict[str, str] = {}

    def check(qwen3vl_inputs: VisionInputs) -> str:
        model = _model(request, which)
        vision = vision_config(qwen3vl_config)
        rows = qwen3vl_inputs.grid.num_patches // vision.spatial_merge_size**2
        shape = (rows, vision.out_hidden_size)
        count = len(vision.deepstack_visual_indexes)
        outputs = qwen3vl_eager_runs(which, qwen3vl_inputs.grid).outputs  # flag unset
        if not kinds:  # golden's structure does not depend on the grid: read it on the first one
            kinds["golden"] = structure(qwen3vl_eager_runs("golden", qwen3vl_inputs.grid).outputs)
        golden_kind = kinds["golden"]
        try:
            kind = structure(outputs)
        except OutputContractError as exc:
            pytest.fail(f"{which}: {exc}", pytrace=False)
        assert kind == golden_kind, f"{which}: forward returns a {kind}, golden a {golden_kind}: {describe(outputs)}"
        pooled, features = merged(outputs), deepstack(outputs)
        assert isinstance(pooled, torch.Tensor) and tuple(pooled.shape) == shape, (
            f"{which}: the merged embeddings are {describe(pooled)}, expected Tensor{shape}"
        )
        assert len(features) == count, f"{which}: the DeepStack features are {describe(features)}, expected {count}"
        bad = [i for i, f in enumerate(features) if not isinstance(f, torch.Tensor) or tuple(f.shape) != shape]
        assert not bad, f"{which}: DeepStack features {bad} are not Tensor{shape}: {describe(features)}"
        with torch.inference_mode(), deepstack_export_flag(model, True):
            flagged = model(*qwen3vl_inputs.args)
        assert torch.equal(merged(flagged), pooled), f"{which}: with the export flag set, the merged embeddings change"
        first, grid = outputs[0], qwen3vl_inputs.grid.id
        if first is pooled:
            taken[grid] = ("merged embeddings", shape)
        elif first is pre_merger(outputs):
            taken[grid] = ("last_hidden_state, the states before the merger", tuple(first.shape))
        else:
            taken[grid] = (describe(first), tuple(getattr(first, "shape", ())))
        said[grid] = ("merged embeddings", shape)
        return f"{kind}: merged {shape}, {count} DeepStack x {shape} (with the export flag {len(deepstack(flagged))})"

    qwen3vl_record.on_grids(qwen3vl_eager_inputs, check)
    grid = qwen3vl_settings.grids[0].id  # the run's own grid, one of the eager grids
    qwen3vl_record.claim(
        reported=said[grid],
        measured=taken[grid],
        detail=f"at {grid}, outputs[0], which the report's wrapper exports, is the {taken[grid][0]} {taken[grid][1]}",
        said=f"outputs[0] is the merged embeddings {said[grid][1]}",
    )


def _rejects(model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> bool:
    """Whether the model refuses inputs that break the contract (rather than computing something)."""
    try:
        with torch.inference_mode():
            model(pixel_values, grid_thw)
    except Exception:
        return True
    return False


@which_model
@pytest.mark.qwen3vl_claim("input-contract")
def test_inputs_are_n_by_1536_and_m_by_3(request, which, qwen3vl_config, qwen3vl_settings, qwen3vl_record):
    model = _model(request, which)
    merge = qwen3vl_config.merge_size
    width = patch_dim(qwen3vl_config)
    measured = []
    for text, dtype in CONTRACT_CASES:
        grid = Grid.parse(text)
        inputs = make_inputs(grid, qwen3vl_config, qwen3vl_settings.seed)
        n = sum(t * h * w for t, h, w in grid.images)
        pixel_values, grid_thw = inputs.args
        assert tuple(pixel_values.shape) == (n, width) and pixel_values.dtype == torch.float32, (
            f"{grid.id}: the suite's pixel_values are {pixel_values.dtype} {tuple(pixel_values.shape)}"
        )
        assert tuple(grid_thw.shape) == (len(grid.images), 3) and not grid_thw.is_floating_point(), (
            f"{grid.id}: the suite's image_grid_thw is {grid_thw.dtype} {tuple(grid_thw.shape)}"
        )
        try:
            with torch.inference_mode():
                pooled = merged(model(pixel_values, grid_thw.to(getattr(torch, dtype))))
        except Exception as exc:
            pytest.fail(f"{which} {grid.id}: refuses valid inputs: {type(exc).__name__}: {exc}", pytrace=False)
        assert pooled.shape[0] == n // merge**2, (
            f"{which} {grid.id}: ({n}, {width}) with an {dtype} grid gave {pooled.shape[0]} pooled rows, "
            f"expected N / merge^2 = {n // merge**2}"
        )
        wrong = {
            f"N - {merge**2} rows": pixel_values[: -merge**2],
            f"N + {merge**2} rows": torch.cat((pixel_values, pixel_values[: merge**2])),
            f"{width - 1} columns": pixel_values[:, :-1],
        }
        accepted = [name for name, value in wrong.items() if not _rejects(model, value, grid_thw)]
        assert not accepted, f"{which} {grid.id}: the model accepts pixel_values with {accepted}"
        measured.append(f"{grid.id}: ({n}, {width}) float32 + ({len(grid.images)}, 3) {dtype}")
    qwen3vl_record.holds(f"{'; '.join(measured)} accepted; N +- {merge**2} rows and {width - 1} columns refused")


@which_model
@pytest.mark.qwen3vl_claim("patch-dim")
def test_patch_dim_from_config(request, which, qwen3vl_config, qwen3vl_settings, qwen3vl_record):
    model = _model(request, which)
    vision = vision_config(qwen3vl_config)
    channels, temporal, patch = vision.in_channels, vision.temporal_patch_size, vision.patch_size
    width = channels * temporal * patch**2
    assert (channels, temporal, patch, width) == (
        REPORTED_CHANNELS, REPORTED_TEMPORAL, REPORTED_PATCH, REPORTED_WIDTH
    ), f"config {qwen3vl_config.name}: {channels} x {temporal} x {patch}^2 = {width}"
    proj = model.patch_embed.proj
    assert proj.in_channels == channels and tuple(proj.kernel_size) == (temporal, patch, patch), (
        f"{which}: patch_embed is Conv3d({proj.in_channels}, kernel {tuple(proj.kernel_size)}), "
        f"config says in_channels {channels}, kernel {(temporal, patch, patch)}"
    )
    assert tuple(proj.stride) == tuple(proj.kernel_size), f"{which}: patch_embed stride {proj.stride} != kernel"
    rows = make_inputs(Grid.parse("1,2,2"), qwen3vl_config, qwen3vl_settings.seed).pixel_values
    with torch.inference_mode():
        embedded = model.patch_embed(rows)
    want = patch_embed_reference(proj, rows)
    err = (embedded.double() - want).abs().max().item() / want.abs().max().item()
    assert err < 1e-4, (
        f"{which}: patch_embed does not read each row as one ({channels}, {temporal}, {patch}, {patch}) patch: "
        f"relative error {err:.3g}"
    )
    qwen3vl_record.holds(
        f"{channels} x {temporal} x {patch}^2 = {width} (config); patch_embed reads each row as one "
        f"(C, T, P, P) patch within {err:.1e}"
    )
