"""The whole Qwen3-VL model in transformers, as the reference a runtime's generation is compared with.

Two references: golden as it is (DeepStack on) and golden with DeepStack switched off (the vision
tower returns no DeepStack features, so the language model injects none), which is what a runtime
without DeepStack support computes.

Every forward passes an all-ones ``attention_mask``: without it (and without a cache)
transformers 4.57.6 reads the M-RoPE temporal position row, which repeats over an image, as packed
sequence boundaries (``find_packed_sequence_indices``), and the text after the image attends to
nothing before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

# The prompt with one image; processors expand <|image_pad|> to one pad per merged patch.
IMAGE_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
IMAGE_PAD = "<|image_pad|>"


def load_full_model(checkpoint: Path) -> torch.nn.Module:
    """``Qwen3VLForConditionalGeneration`` from a checkpoint folder: float32, CPU, eval."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()


@contextlib.contextmanager
def deepstack_off(model: torch.nn.Module) -> Iterator[None]:
    """The vision tower returns its pooled embeddings and no DeepStack features, for the block."""
    from pytest_qwen3vl.model.outputs import without_deepstack

    visual = model.model.visual
    original = visual.forward

    def pooled_only(*args: Any, **kwargs: Any) -> Any:
        return without_deepstack(original(*args, **kwargs))

    visual.forward = pooled_only
    try:
        yield
    finally:
        del visual.forward


def _forward(model: torch.nn.Module, ids: list[int], pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Logits (seq, vocab) of one uncached forward over ``ids``."""
    import torch

    from pytest_qwen3vl.model.api import token_types

    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels,
                    image_grid_thw=grid, use_cache=False,
                    **token_types(model.forward, input_ids, model.config.image_token_id))
    return out.logits[0]


def teacher_forced_logits(model: torch.nn.Module, prompt: list[int], continuation: list[int],
                          pixels: torch.Tensor, grid: torch.Tensor) -> np.ndarray:
    """Next-token logits (steps, vocab) for each step of ``continuation`` after ``prompt``, in one forward."""
    logits = _forward(model, prompt + continuation, pixels, grid)
    result: np.ndarray = logits[len(prompt) - 1: len(prompt) + len(continuation) - 1].numpy()
    return result
