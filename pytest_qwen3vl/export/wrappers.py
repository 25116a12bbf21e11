"""The modules a downstream builder hands to the exporter instead of the vision model itself.

This module imports torch at the top: ``pytest_qwen3vl.export.builder`` and
``pytest_qwen3vl.export.tracing`` import it only when they export or trace.

The wrappers keep the wrapped model under the attribute ``model``, so the exported initializers
are named ``model.blocks.0.attn.qkv.weight`` and so on. What they take from the forward's result
is read by ``pytest_qwen3vl.model.outputs``, the same on every transformers version.
"""

from __future__ import annotations

import torch

from pytest_qwen3vl.model.outputs import deepstack, merged


class _Wrapper(torch.nn.Module):
    """Holds the model and takes its train/eval mode.

    The exporter puts the wrapper back into the wrapper's mode afterwards, and ``train()`` recurses:
    a wrapper left in the default training mode would switch the caller's model to training.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training


class PooledWrapper(_Wrapper):
    """Returns the merged embeddings only: one output ``pooled_embeds``, on every version."""

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        return merged(self.model(pixel_values, image_grid_thw))


class FirstOutputWrapper(_Wrapper):
    """Returns ``outputs[0]``, as the report's wrapper does: the merged embeddings on 4.57.6 only.

    On transformers 5.x ``outputs[0]`` is ``last_hidden_state``, the states before the merger.
    """

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        first: torch.Tensor = self.model(pixel_values, image_grid_thw)[0]
        return first


class AllOutputsWrapper(_Wrapper):
    """Returns the merged embeddings followed by every DeepStack tensor, as flat outputs.

    Flattening lets an empty DeepStack list export as a single output instead of failing.
    """

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values, image_grid_thw)
        return (merged(outputs), *deepstack(outputs))


class StackedWrapper(AllOutputsWrapper):
    """Returns the pooled tensor and the DeepStack tensors stacked into one [D, N, H] output.

    Built on ``AllOutputsWrapper``, so how the model's outputs are read is decided in one place.
    """

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, *deepstack = super().forward(pixel_values, image_grid_thw)
        return pooled, torch.stack(deepstack)


class TupleWrapper(_Wrapper):
    """Returns the model's output unchanged: what a naive builder exports (4.57.6: ``(pooled, [deepstack...])``)."""

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> object:
        return self.model(pixel_values, image_grid_thw)


WRAPPERS: dict[str, type[torch.nn.Module]] = {
    "pooled": PooledWrapper,
    "first": FirstOutputWrapper,
    "all": AllOutputsWrapper,
    "stacked": StackedWrapper,
    "tuple": TupleWrapper,
}
