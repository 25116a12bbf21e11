"""The Qwen3-VL family: the modeling files that carry the same vision tower and DeepStack ``if``.

Qwen3-VL (dense), Qwen3-VL-MoE (30B-A3B, 235B-A22B) and Qwen3-Omni's vision encoder each keep the
tower in their own file under their own class names; a fork of any of them makes the report's one
change in that file. Which family a file belongs to is read from the classes it defines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pytest_qwen3vl.errors import SourceError


@dataclass(frozen=True)
class Family:
    """One modeling file of the family and the names the claims read in it."""

    name: str  # the model_type, also the folder under transformers/models
    vision_class: str  # the class whose forward holds the DeepStack ``if``
    text_rotary: str  # the text model's rotary embedding (interleaved MRoPE)
    rope_index: str  # ``Class.method`` computing the (3, B, S) position ids
    whole: str  # the class of the whole model, image in and logits out
    vision_config: str  # the vision class's config class, in the family's configuration module
    config: str  # the config of ``whole``, which holds ``rope_index`` and ``text_rotary`` (Omni's: the thinker's)
    mergers: str  # the module list of DeepStack mergers, as state-dict keys and ONNX initializers name it
    genai_built: bool = False  # whether onnxruntime-genai's builder makes this family's language model

    @property
    def relative_path(self) -> Path:
        """Where the file is inside the transformers package."""
        return Path("models") / self.name / f"modeling_{self.name}.py"

    @property
    def package(self) -> str:
        """The package a copy of the file is imported into, so its relative imports resolve."""
        return f"transformers.models.{self.name}"

    @property
    def config_module(self) -> str:
        """The module that defines the family's config classes."""
        return f"{self.package}.configuration_{self.name}"

    def not_generated(self) -> str:
        """The "not run" reason of the genai generation claims on a family whose language model
        onnxruntime-genai's builder does not make (0.18.0 names ``Qwen3VLForConditionalGeneration`` and
        no ``Qwen3VLMoe`` or ``Qwen3OmniMoe`` architecture)."""
        return (f"not run: the genai generation claims run on qwen3_vl's whole model; onnxruntime-genai's builder "
                f"does not make {self.name}'s language model ({self.whole})")

    @property
    def deepstack_place(self) -> str:
        """Where the DeepStack ``if`` is, for messages."""
        return f"{self.vision_class}.forward"


QWEN3_VL = Family(
    "qwen3_vl", "Qwen3VLVisionModel", "Qwen3VLTextRotaryEmbedding", "Qwen3VLModel.get_rope_index",
    "Qwen3VLForConditionalGeneration", "Qwen3VLVisionConfig", "Qwen3VLConfig",
    "deepstack_merger_list", genai_built=True,
)
QWEN3_VL_MOE = Family(
    "qwen3_vl_moe", "Qwen3VLMoeVisionModel", "Qwen3VLMoeTextRotaryEmbedding", "Qwen3VLMoeModel.get_rope_index",
    "Qwen3VLMoeForConditionalGeneration", "Qwen3VLMoeVisionConfig", "Qwen3VLMoeConfig",
    "deepstack_merger_list",
)
QWEN3_OMNI_MOE = Family(
    "qwen3_omni_moe", "Qwen3OmniMoeVisionEncoder", "Qwen3OmniMoeThinkerTextRotaryEmbedding",
    "Qwen3OmniMoePreTrainedModelForConditionalGeneration.get_rope_index", "Qwen3OmniMoeThinkerForConditionalGeneration",
    # ``deepstack_merger_list`` is a property returning ``merger_list``, the name its weights carry
    "Qwen3OmniMoeVisionEncoderConfig", "Qwen3OmniMoeThinkerConfig", "merger_list",
)
FAMILIES: dict[str, Family] = {family.name: family for family in (QWEN3_VL, QWEN3_VL_MOE, QWEN3_OMNI_MOE)}
# Every family's DeepStack merger prefix, for code that reads weights without knowing the family
MERGER_PREFIXES: tuple[str, ...] = tuple(sorted({f"{family.mergers}." for family in FAMILIES.values()}))


def family_of_module(module: ModuleType) -> Family:
    """The family whose vision class an imported modeling file defines (the import checked it has one)."""
    defined = (family for family in FAMILIES.values() if isinstance(getattr(module, family.vision_class, None), type))
    found = next(defined, None)
    if found is None:
        raise SourceError(f"{module.__name__} defines none of {', '.join(f.vision_class for f in FAMILIES.values())}")
    return found


def family_of(tree: ast.Module) -> Family | None:
    """The family whose vision class ``tree`` defines at top level, or None."""
    defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    return next((family for family in FAMILIES.values() if family.vision_class in defined), None)
