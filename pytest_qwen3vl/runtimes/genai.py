"""Running a genai model folder: an image prompt through genai's processor, vision, embedding and decoder.

What genai 0.18 exposes, and how it is read: the processor's outputs (``input_ids``,
``pixel_values``, ``image_grid_thw``) as numpy; the image features as the generator's
``inputs_embeds`` rows at the image-pad positions (``image_features`` is not an output it gives);
the logits of each step with ``get_logits()`` before ``generate_next_token()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.runtimes.genai_folder import vision_overlay

if TYPE_CHECKING:
    import numpy as np


@dataclass
class GenaiRun:
    """One prompt through genai: what its processor made, the image features, each step's logits."""

    input_ids: np.ndarray  # (seq,) int64
    pixel_values: np.ndarray  # (patches, 1536)
    grid: np.ndarray  # (images, 3)
    features: np.ndarray  # (image tokens, hidden): inputs_embeds at the image pads
    logits: np.ndarray  # (steps, vocab)
    tokens: list[int]


def genai_model(folder: Path, vision: Path | None = None) -> Any:
    """``og.Model`` on the folder; ``vision`` replaces its vision file through a config overlay."""
    import onnxruntime_genai as og

    config = og.Config(str(folder.resolve()))
    if vision is not None:
        config.overlay(vision_overlay(folder, vision))
    return og.Model(config)


def preprocess(model: Any, image: Path, prompt: str) -> dict[str, np.ndarray]:
    """genai's processor on the prompt and image: its named outputs as numpy arrays."""
    import onnxruntime_genai as og

    inputs = model.create_multimodal_processor()(prompt, images=og.Images.open(str(image)))
    return {name: inputs[name].as_numpy() for name in inputs.keys()}  # noqa: SIM118 - NamedTensors


def generate(model: Any, image: Path, prompt: str, steps: int, image_token_id: int) -> GenaiRun:
    """Greedy generation of ``steps`` tokens; raises what genai raises (a vision file at the wrong grid)."""
    import onnxruntime_genai as og

    inputs = model.create_multimodal_processor()(prompt, images=og.Images.open(str(image)))
    named = {name: inputs[name].as_numpy() for name in inputs.keys()}  # noqa: SIM118 - NamedTensors
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=int(named["input_ids"].shape[-1]) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    embeds = generator.get_output("inputs_embeds")[0].copy()
    logits, tokens = [], []
    for _ in range(steps):
        logits.append(generator.get_logits()[0, -1].copy())
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    ids = named["input_ids"][0].astype("int64")
    import numpy as np

    return GenaiRun(ids, named["pixel_values"], named["image_grid_thw"], embeds[ids == image_token_id],
                    np.stack(logits), tokens)
