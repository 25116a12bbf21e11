"""The names a vision encoder's inputs and outputs go by: the one place that says which is which.

The builder writes these names and every reader (the interface of a user's file, the pipeline
claims, the recipes' sweep) recognises them here, so a name added for a new tool is added once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

INPUT_NAMES = ("pixel_values", "image_grid_thw")
PIXEL_NAMES = ("pixel_values",)
GRID_NAMES = ("image_grid_thw", "grid_thw")
POOLED_OUTPUT = "pooled_embeds"
# Olive's recipe and onnxruntime-genai call the pooled output ``image_features``.
POOLED_NAMES = (POOLED_OUTPUT, "image_features")
# One [D, num_merged_patches, out_hidden_size] output instead of D outputs.
STACKED_OUTPUT = "deepstack_features"
# The builder's split DeepStack outputs are ``deepstack_<i>``; the deepstack recipe's ``deepstack_features_<i>``.
BUILDER_DEEPSTACK_PREFIX = "deepstack_"
RECIPE_DEEPSTACK_PREFIX = "deepstack_features_"
_DEEPSTACK = re.compile(r"^deepstack_(?:features_)?(\d+)$")


def deepstack_index(name: str) -> int | None:
    """The layer position a split DeepStack output's name gives (``deepstack_features_2`` -> 2), or None."""
    match = _DEEPSTACK.match(name)
    return int(match.group(1)) if match else None


def split_outputs(outputs: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """``pooled_embeds`` and the DeepStack features in layer order, from either layout: one output
    per layer, or one stacked ``deepstack_features`` [D, N, H]. A file without DeepStack outputs
    gives an empty list."""
    pooled = outputs[POOLED_OUTPUT]
    if STACKED_OUTPUT in outputs:
        return pooled, list(outputs[STACKED_OUTPUT])
    split = {index: value for name, value in outputs.items() if (index := deepstack_index(name)) is not None}
    return pooled, [split[i] for i in sorted(split)]
