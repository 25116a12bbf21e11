"""What a vision forward returned, read the same way on every supported transformers version.

The one place that knows the two output structures:

- transformers 4.57.6: a tuple ``(merged, [deepstack...])``; ``outputs[0]`` is the merged embeddings.
- transformers 5.x: ``BaseModelOutputWithDeepstackFeatures``; ``outputs[0]`` is ``last_hidden_state``,
  the blocks' output before the merger, ``pooler_output`` the merged embeddings and
  ``deepstack_features`` the DeepStack list.

The structure is read from the value itself, not from the installed version, so a fork that returns
another structure than its golden is described rather than misread. Attribute reads only: the
functions run inside traced wrappers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import OutputContractError

if TYPE_CHECKING:
    import torch

TUPLE = "tuple (merged, deepstack list)"
MODEL_OUTPUT = "ModelOutput (last_hidden_state, pooler_output, deepstack_features)"


def structure(outputs: Any) -> str:
    """Which known structure ``outputs`` has (``TUPLE`` or ``MODEL_OUTPUT``); raises for any other."""
    if getattr(outputs, "pooler_output", None) is not None and hasattr(outputs, "deepstack_features"):
        return MODEL_OUTPUT
    if type(outputs) is tuple and len(outputs) == 2:
        return TUPLE
    raise OutputContractError(f"the vision forward returns {describe(outputs)}, neither {TUPLE} nor {MODEL_OUTPUT}")


def merged(outputs: Any) -> torch.Tensor:
    """The merged embeddings (``pooled_embeds`` of the export): [N / merge^2, out_hidden_size]."""
    result: torch.Tensor = outputs.pooler_output if structure(outputs) == MODEL_OUTPUT else outputs[0]
    return result


def deepstack(outputs: Any) -> list[torch.Tensor]:
    """The DeepStack features, one per layer that ran its merger (empty when none did)."""
    features = outputs.deepstack_features if structure(outputs) == MODEL_OUTPUT else outputs[1]
    return list(features)


def without_deepstack(outputs: Any) -> Any:
    """The same result in the same structure with an empty DeepStack list: what a forward whose
    DeepStack layers never ran returns, so a caller that unpacks either structure reads it as usual."""
    if structure(outputs) == MODEL_OUTPUT:
        return type(outputs)(**{**dict(outputs.items()), "deepstack_features": []})
    return merged(outputs), []


def pre_merger(outputs: Any) -> torch.Tensor | None:
    """The blocks' output before the merger, where the structure carries it (5.x), else None."""
    return outputs.last_hidden_state if structure(outputs) == MODEL_OUTPUT else None


def describe(value: object) -> str:
    """A short type-and-shape description of a forward's result, for messages."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"Tensor{tuple(shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[{', '.join(describe(v) for v in value)}]"
    keys = getattr(value, "keys", None)
    if callable(keys):
        fields = ", ".join(f"{key}={describe(value[key])}" for key in keys())  # type: ignore[index]
        return f"{type(value).__name__}({fields})"
    return type(value).__name__
