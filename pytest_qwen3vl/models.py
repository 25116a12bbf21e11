"""Config presets and the golden/modified vision models that share one set of weights.

Presets are plain dicts, so settings can be checked at start-up without importing transformers.
The models are built by ``build_pair``: golden gets seeded random weights, modified is built
without initialisation and then takes golden's parameters and persistent buffers (the very same
tensor objects). Non-persistent buffers (``rotary_pos_emb.inv_freq``) are computed by each file
itself, so a modified file that changes them is caught by comparing buffers.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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

TEXT_PRESETS: dict[str, dict[str, Any]] = {
    # Released head_dim and MRoPE layout, tiny everywhere else.
    "tiny": {
        "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 128, "intermediate_size": 512, "vocab_size": 1024, "rope_theta": 5000000.0,
        "rope_scaling": _ROPE,
    },
    "2b": {
        "hidden_size": 2048, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 5000000.0, "rope_scaling": _ROPE,
    },
    "4b": {
        "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 5000000.0, "rope_scaling": _ROPE,
    },
    "8b": {
        "hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 5000000.0, "rope_scaling": _ROPE,
    },
}

_REQUIRED_VISION_KEYS = ("depth", "hidden_size", "num_heads", "out_hidden_size", "deepstack_visual_indexes")


class ConfigError(ValueError):
    """A config name or file that cannot be used; one line, shown as a usage error."""


@dataclass(frozen=True)
class ModelSpec:
    """One resolved ``--qwen3vl-config``: the vision config (and text config, if any) as dicts."""

    name: str
    vision: dict[str, Any]
    text: dict[str, Any] | None = None
    source: Path | None = field(default=None, compare=False)
    checkpoint: Path | None = None

    @property
    def merge_size(self) -> int:
        return int(self.vision.get("spatial_merge_size", 2))

    def key(self) -> str:
        """A canonical text of the config and weights' origin, for content-addressed caching."""
        weights = checkpoint_fingerprint(self.checkpoint) if self.checkpoint else "random"
        return json.dumps({"vision": self.vision, "text": self.text, "weights": weights}, sort_keys=True)


def resolve_config(value: str, base: Path) -> ModelSpec:
    """A preset name, or a path to a ``config.json`` (the whole model's or the vision tower's)."""
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
            f"--qwen3vl-config={value!r}: neither a preset ({', '.join(VISION_PRESETS)}) nor an existing config.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--qwen3vl-config: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--qwen3vl-config: {path} holds no JSON object")
    vision = data.get("vision_config", data)
    if not isinstance(vision, dict) or (missing := [k for k in _REQUIRED_VISION_KEYS if k not in vision]):
        raise ConfigError(
            f"--qwen3vl-config: {path} is no Qwen3-VL config: vision config lacks {', '.join(missing or ['keys'])}"
        )
    text = data.get("text_config")
    checkpoint = folder if folder is not None and _weight_files(folder) else None
    return ModelSpec(str(folder or path), dict(vision), dict(text) if isinstance(text, dict) else None, path,
                     checkpoint)


@dataclass
class VisionPair:
    """Golden and modified vision models that share their weights, and what could not be shared."""

    golden: torch.nn.Module
    modified: torch.nn.Module
    unshared: list[str]


def vision_config(spec: ModelSpec) -> Any:
    """A fresh ``Qwen3VLVisionConfig`` for the spec; each model gets its own copy."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig

    return Qwen3VLVisionConfig(**copy.deepcopy(spec.vision))


def build_golden(module: ModuleType, spec: ModelSpec, seed: int) -> torch.nn.Module:
    """Golden vision model, eval mode, float32, CPU: a checkpoint's weights, or random ones from ``seed``."""
    import torch

    if spec.checkpoint is not None:
        from transformers.modeling_utils import no_init_weights

        with no_init_weights():
            model = module.Qwen3VLVisionModel(vision_config(spec))
        load_vision_weights(model, spec.checkpoint)
        return model.float().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module.Qwen3VLVisionModel._from_config(vision_config(spec), dtype=torch.float32)
    return model.eval()


def build_pair(golden_module: ModuleType, modified_module: ModuleType, spec: ModelSpec, seed: int) -> VisionPair:
    """Both vision models; modified takes golden's parameters and persistent buffers as they are."""
    from transformers.modeling_utils import no_init_weights

    golden = build_golden(golden_module, spec, seed)
    with no_init_weights():
        modified = modified_module.Qwen3VLVisionModel(vision_config(spec))
    unshared = share_weights(golden, modified)
    return VisionPair(golden, modified.float().eval(), unshared)


def share_weights(source: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Point every parameter and persistent buffer of ``target`` at ``source``'s tensor.

    Returns the state-dict keys that exist on one side only or differ in shape; those keep
    whatever the target had, and the runtime-equivalence claim reports them.
    """
    source_state = source.state_dict(keep_vars=True)
    target_state = target.state_dict(keep_vars=True)
    unshared = sorted(set(source_state) ^ set(target_state))
    for key, tensor in source_state.items():
        if key not in target_state:
            continue
        if target_state[key].shape != tensor.shape:
            unshared.append(key)
            continue
        owner_name, _, leaf = key.rpartition(".")
        owner = target.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = tensor
        else:
            owner._buffers[leaf] = tensor
    return sorted(unshared)


@contextlib.contextmanager
def deepstack_export_flag(model: torch.nn.Module, value: bool | None) -> Iterator[None]:
    """Set (True/False) or remove (None) ``_skip_deepstack_export`` for a block, then restore it."""
    missing = object()
    old = model.__dict__.get("_skip_deepstack_export", missing)
    if value is None:
        model.__dict__.pop("_skip_deepstack_export", None)
    else:
        model._skip_deepstack_export = value
    try:
        yield
    finally:
        if old is missing:
            model.__dict__.pop("_skip_deepstack_export", None)
        else:
            model._skip_deepstack_export = old


# Where released checkpoints keep the vision tower, newest layout first.
VISION_PREFIXES = ("model.visual.", "visual.")


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def checkpoint_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the weight files: enough to notice a changed checkpoint."""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in _weight_files(folder))


def vision_shards(folder: Path) -> dict[Path, list[str]]:
    """The safetensors files that hold vision-tower tensors, with those tensors' names.

    With a ``model.safetensors.index.json`` only the shards it names for vision tensors are
    opened at all, so the language model's shards are never read.
    """
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        shards: dict[Path, list[str]] = {}
        for name, shard in weight_map.items():
            if name.startswith(VISION_PREFIXES):
                shards.setdefault(folder / shard, []).append(name)
        return shards
    shards = {}
    for path in _weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            names = [name for name in handle.keys() if name.startswith(VISION_PREFIXES)]  # noqa: SIM118
        if names:
            shards[path] = names
    return shards


def load_vision_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the vision tower's tensors of a local checkpoint into ``model``, strictly, as float32."""
    import torch
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path, names in vision_shards(folder).items():
        with safe_open(str(path), framework="pt") as handle:
            for name in names:
                prefix = next(p for p in VISION_PREFIXES if name.startswith(p))
                state[name.removeprefix(prefix)] = handle.get_tensor(name).to(torch.float32)
    if not state:
        raise ConfigError(f"{folder}: no vision tensors (names starting with {' or '.join(VISION_PREFIXES)})")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        problem = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"{folder}: vision tensors do not fit the config: {problem}") from None
    if missing or unexpected:
        raise ConfigError(
            f"{folder}: vision tensors do not fit the config: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
