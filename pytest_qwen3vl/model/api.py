"""transformers APIs that moved between 4.57.6 and 5.x, each read in one place.

Every helper asks for what exists (a name, a parameter, a config key) rather than for a version
number, so a version between the measured ones works wherever its API matches one of them.
The forward's outputs are read by ``pytest_qwen3vl.model.outputs``.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def no_init_weights() -> contextlib.AbstractContextManager[None]:
    """The context that skips weight initialisation (``transformers.initialization`` from 5.x on)."""
    try:
        from transformers.initialization import no_init_weights as skip
    except ImportError:
        from transformers.modeling_utils import no_init_weights as skip
    context: contextlib.AbstractContextManager[None] = skip()
    return context


def pil_image_processor_class() -> type:
    """``Qwen2VLImageProcessor`` on PIL and numpy: 5.x names it ``Qwen2VLImageProcessorPil`` (its plain
    name there needs torchvision), 4.57.6 calls it ``Qwen2VLImageProcessor``."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        found: type = Qwen2VLImageProcessor
    else:
        found = Qwen2VLImageProcessorPil
    return found


def text_rope(text_config: Any) -> tuple[float, list[int]]:
    """The text rotary base theta and MRoPE sections: ``rope_parameters`` on 5.x, ``rope_theta`` and
    ``rope_scaling`` on 4.57.6."""
    parameters = getattr(text_config, "rope_parameters", None)
    if isinstance(parameters, dict) and "rope_theta" in parameters:
        return float(parameters["rope_theta"]), list(parameters["mrope_section"])
    return float(text_config.rope_theta), list(text_config.rope_scaling["mrope_section"])


def text_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A config.json's text fields as the installed transformers reads them: a 5.x checkpoint's
    ``rope_parameters`` become 4.57.6's ``rope_theta`` and ``rope_scaling`` where the text config takes
    no ``rope_parameters`` (4.57.6 would otherwise read ``rope_scaling`` None and fail in the rotary
    embedding). Fields already in the installed form are returned as they are."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig

    parameters = fields.get("rope_parameters")
    takes = "rope_parameters" in inspect.signature(Qwen3VLTextConfig.__init__).parameters
    if takes or not isinstance(parameters, dict) or "rope_scaling" in fields:
        return fields
    rest = {key: value for key, value in fields.items() if key != "rope_parameters"}
    scaling = {key: value for key, value in parameters.items() if key != "rope_theta"}
    return {**rest, "rope_theta": parameters.get("rope_theta", rest.get("rope_theta")), "rope_scaling": scaling}


def rope_index(
    model: Any, input_ids: torch.Tensor, image_grid_thw: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index`` for a batch of text and image tokens: 5.x also takes ``mm_token_type_ids``
    (1 at image tokens), 4.57.6 finds the image tokens itself."""
    kwargs: dict[str, Any] = {"image_grid_thw": image_grid_thw, "attention_mask": attention_mask}
    kwargs.update(token_types(model.get_rope_index, input_ids, image_token_id))
    result: tuple[torch.Tensor, torch.Tensor] = model.get_rope_index(input_ids, **kwargs)
    return result


def token_types(function: Any, input_ids: torch.Tensor, image_token_id: int) -> dict[str, torch.Tensor]:
    """``{"mm_token_type_ids": 1 at image tokens}`` where ``function`` takes that parameter (5.x's
    ``get_rope_index`` and model ``forward``, which refuse image inputs without it), else ``{}``."""
    if "mm_token_type_ids" not in inspect.signature(function).parameters:
        return {}
    return {"mm_token_type_ids": (input_ids == image_token_id).int()}


def deepstack_mask(language: Any, mask: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """The image-row mask (B, S) in the form ``language``'s ``_deepstack_process`` reads it: as it is, or
    expanded to (B, S, hidden_size) where that method takes ``visual_pos_masks[..., 0]`` (4.57.6's Qwen3-Omni
    thinker text model, whose forward passes the mask it scattered the image rows with; 5.x passes (B, S))."""
    if "visual_pos_masks[..., 0]" not in inspect.getsource(type(language)._deepstack_process):
        return mask
    return mask[..., None].expand(*mask.shape, hidden_size)
