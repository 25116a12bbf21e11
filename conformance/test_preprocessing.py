"""Claims grid-from-size and pipeline-384: what the released image processor makes of images drawn here.

The processor is transformers' ``Qwen2VLImageProcessor`` configured as the released checkpoints are
(``pytest_qwen3vl.model.references.released_image_processor``), built directly, with no network. These claims
are about preprocessing, so they do not depend on the modified file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from pytest_qwen3vl.model.references import (
    RELEASED_IMAGE_MEAN,
    RELEASED_IMAGE_STD,
    RELEASED_MERGE_SIZE,
    RELEASED_SIZE,
    RELEASED_TEMPORAL_PATCH_SIZE,
    patchify_reference,
    released_image_processor,
)

REPORTED_PATCH = 16  # the report's p in grid_h = ceil(H_img / p)
REPORTED_384 = (1, 24, 24)  # the report's grid for 384x384 images, N = 576
# (H, W): the pipeline's size, sizes between multiples of 32, tiny, landscape, portrait, large.
SIZES = ((384, 384), (400, 400), (20, 20), (300, 500), (500, 300), (700, 1000), (480, 640))


def _draw(height: int, width: int) -> Any:
    """An RGB picture whose channels differ: a red ramp across, a green ramp down, a blue checkerboard."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    blue = (x // 8 + y // 8) % 2 * 255
    return Image.fromarray(np.stack((red, green, blue), axis=-1).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def processor() -> Any:
    return released_image_processor()


@pytest.mark.qwen3vl_claim("pipeline-384")
def test_384_image_gives_24x24_grid(processor, qwen3vl_record):
    image = _draw(384, 384)
    out = processor(images=image, return_tensors="pt")
    grid = tuple(out["image_grid_thw"][0].tolist())
    pixel_values = out["pixel_values"]
    assert grid == REPORTED_384, f"384x384 gives grid {grid}, the report says {REPORTED_384}"
    rows = math.prod(REPORTED_384)
    assert tuple(pixel_values.shape) == (rows, 3 * RELEASED_TEMPORAL_PATCH_SIZE * REPORTED_PATCH**2), (
        f"384x384 gives pixel_values {tuple(pixel_values.shape)}, expected ({rows}, 1536)"
    )
    mean = torch.tensor(RELEASED_IMAGE_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(RELEASED_IMAGE_STD, dtype=torch.float64)[:, None, None]
    normalized = (torch.from_numpy(np.array(image)).permute(2, 0, 1).double() / 255 - mean) / std
    want = patchify_reference(normalized, REPORTED_PATCH, RELEASED_TEMPORAL_PATCH_SIZE, RELEASED_MERGE_SIZE)
    err = (pixel_values.double() - want).abs().max().item()
    assert err < 1e-5, f"the 384x384 rows are not the image's (C, T, P, P) patches in merge order: off by {err:.3g}"
    qwen3vl_record.holds(
        f"384x384 -> grid {grid}, pixel_values {tuple(pixel_values.shape)}; each row is a normalized (3, 2, 16, 16) "
        f"patch of the picture, within {err:.1e}"
    )


@pytest.mark.qwen3vl_claim("grid-from-size")
def test_grid_from_image_size(processor, qwen3vl_record):
    reported, measured = {}, {}
    for height, width in SIZES:
        out = processor(images=_draw(height, width), return_tensors="pt")
        t, h, w = out["image_grid_thw"][0].tolist()
        label = f"{height}x{width}"
        assert out["pixel_values"].shape[0] == t * h * w, (
            f"{label}: {out['pixel_values'].shape[0]} patches for grid {(t, h, w)}, expected N = T * h * w"
        )
        assert h % RELEASED_MERGE_SIZE == 0 and w % RELEASED_MERGE_SIZE == 0, (
            f"{label}: grid {(t, h, w)} is not a multiple of the merge size {RELEASED_MERGE_SIZE}"
        )
        pixels = h * w * REPORTED_PATCH**2
        assert RELEASED_SIZE["shortest_edge"] <= pixels <= RELEASED_SIZE["longest_edge"], (
            f"{label}: the resized image has {pixels} pixels, outside the budget {RELEASED_SIZE}"
        )
        measured[label] = (t, h, w)
        reported[label] = (1, math.ceil(height / REPORTED_PATCH), math.ceil(width / REPORTED_PATCH))
    differ = [label for label in measured if measured[label] != reported[label]]
    qwen3vl_record.claim(
        reported=reported,
        measured=measured,
        detail=f"N = T * h * w for all {len(SIZES)} sizes (HxW); grids are multiples of {RELEASED_MERGE_SIZE} "
        f"with h * w * 16^2 inside [{RELEASED_SIZE['shortest_edge']}, {RELEASED_SIZE['longest_edge']}] pixels; "
        + "; ".join(f"{label} -> {measured[label]}" for label in differ),
        said="; ".join(f"{label} -> {reported[label]}" for label in differ),
    )
