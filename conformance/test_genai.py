"""Claims "In the runtime": the report's vision file in onnxruntime-genai's multimodal pipeline.

genai runs an image prompt through its own image processor, the vision file, an embedding model
and the text decoder that genai's builder writes. Each claim compares what genai computes with
transformers: the processors, the image features, and generation against golden with DeepStack
off (what genai 0.18 implements: it has no DeepStack) and on (what golden computes).

The folder and checkpoint come from the session-wide ``qwen3vl_genai`` fixture (made once per run);
the vision file is the session's modified pooled export at the genai grid, or the folder's own with
``--qwen3vl-genai-folder``. genai runs behind the runtime interface (``qwen3vl_genai.runtime()``, the
``onnxruntime-genai`` runtime): ``load`` gives genai's model with the vision file, whose session runs
genai's processor and generation; a node of the vision file that stops is its ``RuntimeRefused``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pytest_qwen3vl.errors import RecipeUnsupported, RuntimeRefused
from pytest_qwen3vl.model.grids import Grid, other_grid
from pytest_qwen3vl.model.outputs import merged
from pytest_qwen3vl.model.references import ProcessorSettings, image_processor

pytestmark = pytest.mark.qwen3vl_genai

STEPS = 8
# genai against transformers, float32. Measured on the tiny checkpoint (seed 0, 1x24x24): pixel values
# 1.2e-7, image features 7.7e-7, logits 2.3e-5 max abs (logits up to ~60 in magnitude). Each bound is
# at least ten times what was measured.
PIXEL_ATOL = 1e-5
# One 8-bit level after normalisation with mean/std 0.5: where the two resizers round a pixel apart.
# Measured at 300x500 (resized to 288x512): 0.0078 max abs.
ONE_LEVEL = 2 / 255 + 1e-6
FEATURE_ATOL, FEATURE_RTOL = 1e-5, 1e-5
LOGIT_ATOL = 1e-3
# (H, W) in pixels: the pipeline's 384x384, then sizes the processor must resize (between multiples of
# 32, landscape, portrait, below the pixel floor).
SIZES = ((384, 384), (300, 500), (500, 300), (200, 200))


@dataclass
class Case:
    """One image prompt through genai and the references it is compared with."""

    run: Any  # runtimes.genai.GenaiRun
    prompt: list[int]
    pixels: torch.Tensor
    grid: torch.Tensor


def image_side(grid: Grid) -> tuple[int, int]:
    """The image (H, W) in pixels whose processed grid is the one-image ``grid``."""
    _, h, w = grid.images[0]
    return 16 * h, 16 * w


def vision_file(qwen3vl_genai, qwen3vl_export, grid: Grid, which: str = "modified") -> Path:
    """The report's file (modified, pooled, traced at ``grid``; golden's for a claim about golden alone),
    or the user's folder's own, as its config names it."""
    from pytest_qwen3vl.runtimes.genai_folder import CONFIG_FILE

    folder = qwen3vl_genai.user_folder
    if folder is None:
        return qwen3vl_export(which, grid)
    return folder / json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["model"]["vision"]["filename"]


def hf_inputs(image: Path, checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' processor configured as the checkpoint's ``preprocessor_config.json`` says: the
    configuration genai's folder is made from, so only the two implementations differ."""
    from PIL import Image

    settings = ProcessorSettings.of(json.loads((checkpoint / "preprocessor_config.json").read_text(encoding="utf-8")))
    out = image_processor(settings)(images=[Image.open(image)], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def genai_session(qwen3vl_genai, vision: Path) -> Any:
    """genai's model on the session's folder with ``vision`` (a ``runtimes.genai.GenaiSession``); when we
    cannot make the folder (genai's builder failed, a checkpoint we cannot use) the row is not run: that
    is our build, not the file."""
    return qwen3vl_genai.runtime().load(vision)


@pytest.fixture(scope="module")
def case(qwen3vl_genai, qwen3vl_export, tmp_path_factory) -> Case:
    from transformers import AutoTokenizer

    from pytest_qwen3vl.model.generation import IMAGE_PAD, IMAGE_PROMPT
    from pytest_qwen3vl.plugin.genai import write_image

    qwen3vl_genai.check_whole_model()
    grid = qwen3vl_genai.grid
    image = write_image(tmp_path_factory.mktemp("genai") / f"{grid.id}.png", *image_side(grid), seed=0)
    run = genai_session(qwen3vl_genai, vision_file(qwen3vl_genai, qwen3vl_export, grid)).generate(
        image, IMAGE_PROMPT, STEPS)
    pixels, thw = hf_inputs(image, qwen3vl_genai.checkpoint())
    tokenizer = AutoTokenizer.from_pretrained(str(qwen3vl_genai.checkpoint()))
    pads = int(thw.prod()) // 4
    prompt = tokenizer(IMAGE_PROMPT.replace(IMAGE_PAD, IMAGE_PAD * pads))["input_ids"]
    return Case(run, prompt, pixels, thw)


@pytest.mark.qwen3vl_claim("genai-preprocessing")
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_processor_matches_transformers(size, qwen3vl_genai, qwen3vl_export, tmp_path, qwen3vl_record):
    from pytest_qwen3vl.model.generation import IMAGE_PROMPT
    from pytest_qwen3vl.plugin.genai import write_image

    image = write_image(tmp_path / "image.png", *size, seed=1)
    # The processor runs before any vision file: golden's serves, so the modified file plays no part.
    vision = vision_file(qwen3vl_genai, qwen3vl_export, qwen3vl_genai.grid, "golden")
    named = genai_session(qwen3vl_genai, vision).preprocess(image, IMAGE_PROMPT)
    pixels, grid = hf_inputs(image, qwen3vl_genai.checkpoint())
    assert named["image_grid_thw"].tolist() == grid.tolist(), (
        f"{size[0]}x{size[1]}: genai's grid {named['image_grid_thw'].tolist()}, transformers' {grid.tolist()}"
    )
    diff = np.abs(named["pixel_values"] - pixels.numpy())
    gap = float(diff.max())
    assert gap <= ONE_LEVEL, f"{size[0]}x{size[1]}: pixel values differ by {gap:.3g} (max abs)"
    apart = float((diff > PIXEL_ATOL).mean())
    qwen3vl_record.claim(
        reported=True, measured=gap <= PIXEL_ATOL, said="the same pixel values",
        detail=f"grid {grid[0].tolist()}, pixel values within {gap:.2g}"
        + (f" ({apart:.2%} of values one 8-bit level apart: the resizers round differently)" if apart else ""),
    )


@pytest.mark.qwen3vl_claim("genai-image-features")
def test_image_features_are_golden_pooled(case, qwen3vl_golden_vision, qwen3vl_record):
    with torch.no_grad():
        pooled = merged(qwen3vl_golden_vision(case.pixels, grid_thw=case.grid)).numpy()
    features = case.run.features
    assert features.shape == pooled.shape, f"genai has {features.shape} image features, golden {pooled.shape}"
    gap = float(np.abs(features - pooled).max())
    assert np.allclose(features, pooled, rtol=FEATURE_RTOL, atol=FEATURE_ATOL), (
        f"genai's image features differ from golden's pooled embeddings: max abs {gap:.3g} "
        "(a vision file with other weights, or an embedding model that misplaces them)"
    )
    qwen3vl_record.holds(f"{features.shape[0]} rows within {gap:.2g} (max abs)")


def compare_generation(case: Case, reference: Callable[..., np.ndarray]) -> tuple[float, float, int | None]:
    """Max abs and relative L2 of the per-step logits, and the first step where the greedy tokens
    differ (None: equal for every step). transformers is teacher-forced on genai's tokens, so its
    greedy sequence equals genai's up to the first step whose argmax differs."""
    logits = reference(case.prompt, case.run.tokens, case.pixels, case.grid)
    ours = case.run.logits
    gap = float(np.abs(ours - logits).max())
    rel = float(np.linalg.norm(ours - logits) / np.linalg.norm(logits))
    chosen = logits.argmax(axis=-1).tolist()
    first = next((step for step, (a, b) in enumerate(zip(case.run.tokens, chosen, strict=True)) if a != b), None)
    return gap, rel, first


def _reference(model: Any, deepstack: bool) -> Callable[..., np.ndarray]:
    from pytest_qwen3vl.model.generation import deepstack_off, teacher_forced_logits

    def run(prompt, tokens, pixels, grid):
        if deepstack:
            return teacher_forced_logits(model, prompt, tokens, pixels, grid)
        with deepstack_off(model):
            return teacher_forced_logits(model, prompt, tokens, pixels, grid)

    return run


def _tokens_text(first: int | None) -> str:
    return f"same {STEPS} greedy tokens" if first is None else f"greedy tokens differ first at step {first + 1}"


@pytest.mark.qwen3vl_claim("genai-deepstack-off")
def test_generation_matches_transformers_without_deepstack(case, qwen3vl_genai, qwen3vl_record):
    assert case.run.input_ids.tolist() == case.prompt, "genai's prompt ids differ from transformers' tokenizer"
    gap, rel, first = compare_generation(case, _reference(qwen3vl_genai.reference(), deepstack=False))
    assert gap <= LOGIT_ATOL and first is None, (
        f"genai differs from transformers with DeepStack off: logits max abs {gap:.3g} "
        f"(relative L2 {rel:.2g}), {_tokens_text(first)}"
    )
    qwen3vl_record.holds(f"logits within {gap:.2g} over {STEPS} steps, {_tokens_text(first)}")


@pytest.mark.qwen3vl_claim("genai-like-golden")
def test_generation_against_golden_with_deepstack(case, qwen3vl_genai, qwen3vl_record):
    gap, rel, first = compare_generation(case, _reference(qwen3vl_genai.reference(), deepstack=True))
    same = gap <= LOGIT_ATOL and first is None
    qwen3vl_record.claim(
        reported=True,
        measured=same,
        detail=f"logits differ by up to {gap:.2g} (relative L2 {rel:.2g}), {_tokens_text(first)}: genai "
        "0.18 has no DeepStack, golden adds its features to the first decoder layers",
        said="the exported pipeline behaves like golden",
    )


def moved(grid: Grid) -> Grid:
    """The one-image grid with H and W moved by two merge blocks, down where the image stays above the
    processor's pixel floor (16 x 16 patches)."""
    return other_grid(grid, 4, floor=16)


@pytest.mark.qwen3vl_claim("genai-other-grid")
def test_other_image_size_fails_loudly(qwen3vl_genai, qwen3vl_export, qwen3vl_golden_vision, tmp_path, qwen3vl_record):
    from pytest_qwen3vl.model.generation import IMAGE_PROMPT
    from pytest_qwen3vl.plugin.genai import write_image

    qwen3vl_genai.check_whole_model()
    traced, other = qwen3vl_genai.grid, moved(qwen3vl_genai.grid)
    image = write_image(tmp_path / f"{other.id}.png", *image_side(other), seed=2)
    session = genai_session(qwen3vl_genai, vision_file(qwen3vl_genai, qwen3vl_export, traced))
    try:
        run = session.generate(image, IMAGE_PROMPT, 1)
    except RuntimeRefused as exc:  # a node of the vision file stopped (genai's other errors are ours)
        qwen3vl_record.holds(f"{traced.id} file on a {other.id} image: {exc}")
        return
    pixels, grid = hf_inputs(image, qwen3vl_genai.checkpoint())
    with torch.no_grad():
        pooled = merged(qwen3vl_golden_vision(pixels, grid_thw=grid)).numpy()
    right = run.features.shape == pooled.shape and np.allclose(run.features, pooled, rtol=FEATURE_RTOL,
                                                               atol=FEATURE_ATOL)
    assert right, f"the {traced.id} file ran on a {other.id} image and gave wrong image features, silently"
    qwen3vl_record.claim(reported="fails loudly", measured="works",
                         detail=f"the {traced.id} file gives golden's features on a {other.id} image")


@pytest.mark.qwen3vl_claim("genai-grid-free")
def test_grid_free_file_takes_other_sizes(qwen3vl_genai, qwen3vl_export, qwen3vl_golden_vision, tmp_path,
                                          qwen3vl_record):
    """The modified file exported with the grid-free recipe at the traced grid, fed the other size's image."""
    from pytest_qwen3vl.model.generation import IMAGE_PROMPT
    from pytest_qwen3vl.plugin.genai import write_image

    if qwen3vl_genai.user_folder is not None:
        pytest.skip("not run: your genai folder's own vision file is checked by genai-other-grid")
    qwen3vl_genai.check_whole_model()
    traced, other = qwen3vl_genai.grid, moved(qwen3vl_genai.grid)
    image = write_image(tmp_path / f"{other.id}.png", *image_side(other), seed=2)
    try:
        path = qwen3vl_export.recipe("modified", "grid-free", traced)
    except RecipeUnsupported as exc:  # our recipe's gap, not a verdict on the file
        pytest.skip(f"not run: {exc.summary}")
    run = genai_session(qwen3vl_genai, path).generate(image, IMAGE_PROMPT, 1)
    pixels, grid = hf_inputs(image, qwen3vl_genai.checkpoint())
    with torch.no_grad():
        pooled = merged(qwen3vl_golden_vision(pixels, grid_thw=grid)).numpy()
    assert run.features.shape == pooled.shape, (
        f"the grid-free file on a {other.id} image gives features of shape {run.features.shape}, golden {pooled.shape}"
    )
    gap = float(np.abs(run.features - pooled).max())
    assert np.allclose(run.features, pooled, rtol=FEATURE_RTOL, atol=FEATURE_ATOL), (
        f"the grid-free file (traced at {traced.id}) gives image features {gap:.3g} (max abs) from golden's "
        f"on a {other.id} image"
    )
    qwen3vl_record.holds(f"traced at {traced.id}, a {other.id} image: {run.features.shape[0]} rows within "
                         f"{gap:.2g} of golden's (max abs)")
