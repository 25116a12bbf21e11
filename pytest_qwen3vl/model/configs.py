"""Model configs: the presets (tiny, 2b, 4b, 8b) and a named config or checkpoint folder resolved to a ``ModelSpec``.

Presets are plain dicts, so settings can be checked at start-up without importing transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.checkpoint import checkpoint_fingerprint, checkpoint_weights, find_weights
from pytest_qwen3vl.source.families import QWEN3_VL, Family

# Interface dimensions shared by every released Qwen3-VL vision tower.
_INTERFACE = {
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 2304,
    "hidden_act": "gelu_pytorch_tanh",
}
_ROPE = {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}

VISION_PRESETS: dict[str, dict[str, Any]] = {
    # The 4B's interface (out_hidden_size, DeepStack count, patch geometry) with a small inside.
    "tiny": {
        **_INTERFACE, "depth": 5, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
        "out_hidden_size": 2560, "deepstack_visual_indexes": [1, 2, 3],
    },
    "2b": {
        **_INTERFACE, "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
        "out_hidden_size": 2048, "deepstack_visual_indexes": [5, 11, 17],
    },
    "4b": {
        **_INTERFACE, "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
        "out_hidden_size": 2560, "deepstack_visual_indexes": [5, 11, 17],
    },
    "8b": {
        **_INTERFACE, "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
        "out_hidden_size": 4096, "deepstack_visual_indexes": [8, 16, 24],
    },
}

# The released text models' dimensions, from their config.json files (Qwen3-VL-2B/4B/8B-Instruct).
_RELEASED_TEXT = {
    "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6, "max_position_embeddings": 262144,
    "rope_theta": 5000000.0, "rope_scaling": _ROPE,
}
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    # Released head_dim and MRoPE layout, tiny everywhere else.
    "tiny": {
        "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 128, "intermediate_size": 512, "vocab_size": 1024, "rope_theta": 5000000.0,
        "rope_scaling": _ROPE,
    },
    "2b": {
        **_RELEASED_TEXT, "hidden_size": 2048, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 8, "intermediate_size": 6144, "tie_word_embeddings": True,
    },
    "4b": {
        **_RELEASED_TEXT, "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 9728, "tie_word_embeddings": True,
    },
    "8b": {
        **_RELEASED_TEXT, "hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 12288, "tie_word_embeddings": False,
    },
}
# What a preset's text config adds for a family's language model: the sparse MLP of Qwen3-VL-MoE and of
# Qwen3-Omni's thinker, tiny (4 experts of 128, 2 per token, every layer sparse).
_TINY_EXPERTS = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 128, "decoder_sparse_step": 1}
FAMILY_TEXT: dict[str, dict[str, Any]] = {"qwen3_vl_moe": _TINY_EXPERTS, "qwen3_omni_moe": _TINY_EXPERTS}
# What a family's whole model builds beside the vision tower and the language model: Qwen3-Omni's thinker
# builds an audio tower, which no claim feeds (a prompt without audio tokens never runs it), so a tiny one:
# 1 layer of width 64, 16 convolution channels, the released 128 mel bins; its ``output_dim`` is the text
# hidden size (``whole_config``).
FAMILY_TOWERS: dict[str, dict[str, dict[str, Any]]] = {
    "qwen3_omni_moe": {"audio_config": {
        "num_mel_bins": 128, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 128,
        "d_model": 64, "downsample_hidden_size": 16,
    }},
}
# The whole model's special tokens in the released vocabulary; a smaller one (the tiny preset's 1024)
# gets the same four at its top instead (``special_tokens``).
RELEASED_TOKENS = {
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655, "video_token_id": 151656,
}
# Top-level fields of a whole model's config.json that the whole-model config keeps.
_TOP_LEVEL = (*RELEASED_TOKENS, "tie_word_embeddings")

_REQUIRED_VISION_KEYS = ("depth", "hidden_size", "num_heads", "out_hidden_size", "deepstack_visual_indexes")


@dataclass(frozen=True)
class ModelSpec:
    """One resolved model config: the vision config (and text config, if any) as dicts."""

    name: str
    vision: dict[str, Any]
    text: dict[str, Any] | None = None
    source: Path | None = field(default=None, compare=False)
    checkpoint: Path | None = None
    top: dict[str, Any] = field(default_factory=dict)  # special token ids, tie_word_embeddings
    model_type: str = ""  # a whole model's config.json's: which family it is of ("" for presets)

    @property
    def merge_size(self) -> int:
        return int(self.vision.get("spatial_merge_size", 2))

    def key(self) -> str:
        """A canonical text of the config and weights' origin, for content-addressed caching."""
        weights = checkpoint_fingerprint(self.checkpoint) if self.checkpoint else "random"
        return json.dumps({"vision": self.vision, "text": self.text, "top": self.top, "weights": weights},
                          sort_keys=True)


def resolve_config(value: str, base: Path) -> ModelSpec:
    """A preset name, a path to a ``config.json`` (the whole model's or the vision tower's), or a
    checkpoint folder: its weights (checked readable here, so a damaged folder is a usage error) or,
    for a folder that holds no weights file at all, its config with seeded weights. ``ConfigError``
    messages do not name the option: the caller puts its own first."""
    name = value.strip()
    if name.lower() in VISION_PRESETS:
        key = name.lower()
        return ModelSpec(key, dict(VISION_PRESETS[key]), dict(TEXT_PRESETS[key]))
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base / path
    folder = path if path.is_dir() else None
    if folder is not None:
        path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"neither a preset ({', '.join(VISION_PRESETS)}) nor an existing checkpoint folder or config.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no JSON object")
    # Qwen3-Omni's config.json keeps the vision-language model (its thinker) under thinker_config.
    thinker = data.get("thinker_config")
    whole = thinker if isinstance(thinker, dict) else data
    vision = whole.get("vision_config", data)
    if not isinstance(vision, dict) or (missing := [k for k in _REQUIRED_VISION_KEYS if k not in vision]):
        raise ConfigError(
            f"{path} is no Qwen3-VL config: vision config lacks {', '.join(missing or ['keys'])}"
        )
    text = whole.get("text_config")
    checkpoint = folder if folder is not None and find_weights(folder) else None
    top = {k: whole[k] for k in _TOP_LEVEL if k in whole} if vision is not data else {}
    model_type = str(data.get("model_type", "")) if vision is not data else ""
    return ModelSpec(str(folder or path), dict(vision), dict(text) if isinstance(text, dict) else None, path,
                     checkpoint, top, model_type)


def other_family(spec: ModelSpec, golden: Path, config_flag: str, modified_flag: str) -> str | None:
    """Why a checkpoint cannot be checked against ``golden``'s family: one of another family (its weights do
    not fit that family's classes, and its verdicts would be about another model); None when it can. The
    flags are the caller's names for the two options."""
    from pytest_qwen3vl.source.families import FAMILIES
    from pytest_qwen3vl.source.files import file_family

    if spec.model_type not in FAMILIES:
        return None
    family = file_family(golden)
    if spec.model_type == family.name:
        return None
    return (f"{config_flag}: a {spec.model_type} checkpoint, and the file checked is a {family.name} one "
            f"({golden.name}): name a {family.name} checkpoint, or a {spec.model_type} file with {modified_flag}")


def weights_origin(spec: ModelSpec, seed: int) -> str:
    """Where golden's weights come from, said where a user reads it (the header, qwen3vl-export's
    progress): a folder without weights gets seeded ones, and that must not pass unnoticed."""
    if spec.checkpoint is not None:
        return f"the checkpoint's {checkpoint_weights(spec.checkpoint).describe()}"
    if spec.source is not None and Path(spec.name).is_dir():
        return f"random (seed {seed}): {spec.name} holds no weights file"
    return f"random (seed {seed})"


def special_tokens(vocab_size: int) -> dict[str, int]:
    """The released special-token ids, or for a vocabulary too small to hold them the four ids below
    its last (1019..1022 of the tiny preset's 1024)."""
    if vocab_size > max(RELEASED_TOKENS.values()):
        return dict(RELEASED_TOKENS)
    return {name: vocab_size - 5 + i for i, name in enumerate(RELEASED_TOKENS)}


def whole_config(spec: ModelSpec, tokens: dict[str, int] | None = None, text: dict[str, Any] | None = None,
                 family: Family = QWEN3_VL) -> Any:
    """The ``family``'s whole-model config (``Qwen3VLConfig``, ``Qwen3VLMoeConfig``,
    ``Qwen3OmniMoeThinkerConfig`` with ``FAMILY_TOWERS``' audio tower) for ``spec``, with ``tokens`` and
    ``text`` fields on top.

    A checkpoint's text config and top-level fields are taken as they are; a preset's text config
    gets the vision tower's ``out_hidden_size`` as its hidden size (the pooled embeddings replace
    token embeddings, so the two must be equal), and the special tokens its vocabulary can hold.
    """
    import copy
    import importlib

    from pytest_qwen3vl.model.api import text_fields

    if spec.text is None:
        raise ConfigError(f"{spec.name}: no text_config, so the whole model cannot be built")
    vision, fields = copy.deepcopy(spec.vision), text_fields({**copy.deepcopy(spec.text), **(text or {})})
    if spec.checkpoint is None:
        fields["hidden_size"] = vision["out_hidden_size"]
    top = {**special_tokens(int(fields.get("vocab_size", _RELEASED_TEXT["vocab_size"]))), **spec.top, **(tokens or {})}
    tie = bool(top.pop("tie_word_embeddings", fields.get("tie_word_embeddings", False)))
    fields["tie_word_embeddings"] = tie
    if fields["hidden_size"] != vision["out_hidden_size"]:
        raise ConfigError(f"{spec.name}: text hidden_size {fields['hidden_size']} != vision out_hidden_size "
                          f"{vision['out_hidden_size']}")
    towers = {name: {**tower, "output_dim": fields["hidden_size"]}
              for name, tower in copy.deepcopy(FAMILY_TOWERS.get(family.name, {})).items()}
    config_class = getattr(importlib.import_module(family.config_module), family.config)
    return config_class(vision_config=vision, text_config=fields, tie_word_embeddings=tie, **towers, **top)
