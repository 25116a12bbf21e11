"""The Qwen3-VL family: the modeling files that carry the same vision tower and DeepStack ``if``.

Qwen3-VL (dense), Qwen3-VL-MoE (30B-A3B, 235B-A22B) and Qwen3-Omni's vision encoder each keep the
tower in their own file under their own class names; a fork of any of them makes the report's one
change in that file. Which family a file belongs to is read from the classes it defines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    """One modeling file of the family and the names the claims read in it."""

    name: str  # the model_type, also the folder under transformers/models
    vision_class: str  # the class whose forward holds the DeepStack ``if``
    text_rotary: str  # the text model's rotary embedding (interleaved MRoPE)
    rope_index: str  # ``Class.method`` computing the (3, B, S) position ids
    whole: str  # the class of the whole model, image in and logits out

    @property
    def relative_path(self) -> Path:
        """Where the file is inside the transformers package."""
        return Path("models") / self.name / f"modeling_{self.name}.py"

    @property
    def package(self) -> str:
        """The package a copy of the file is imported into, so its relative imports resolve."""
        return f"transformers.models.{self.name}"

    @property
    def deepstack_place(self) -> str:
        """Where the DeepStack ``if`` is, for messages."""
        return f"{self.vision_class}.forward"


QWEN3_VL = Family(
    "qwen3_vl", "Qwen3VLVisionModel", "Qwen3VLTextRotaryEmbedding", "Qwen3VLModel.get_rope_index",
    "Qwen3VLForConditionalGeneration",
)
QWEN3_VL_MOE = Family(
    "qwen3_vl_moe", "Qwen3VLMoeVisionModel", "Qwen3VLMoeTextRotaryEmbedding", "Qwen3VLMoeModel.get_rope_index",
    "Qwen3VLMoeForConditionalGeneration",
)
QWEN3_OMNI_MOE = Family(
    "qwen3_omni_moe", "Qwen3OmniMoeVisionEncoder", "Qwen3OmniMoeThinkerTextRotaryEmbedding",
    "Qwen3OmniMoePreTrainedModelForConditionalGeneration.get_rope_index", "Qwen3OmniMoeThinkerForConditionalGeneration",
)
FAMILIES: dict[str, Family] = {family.name: family for family in (QWEN3_VL, QWEN3_VL_MOE, QWEN3_OMNI_MOE)}


def family_of(tree: ast.Module) -> Family | None:
    """The family whose vision class ``tree`` defines at top level, or None."""
    defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    return next((family for family in FAMILIES.values() if family.vision_class in defined), None)
