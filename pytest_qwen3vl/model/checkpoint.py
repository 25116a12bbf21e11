"""Local checkpoint folders: which safetensors shards hold the vision tower or the language model,
and loading them.

Released checkpoints keep the whole model in (sharded) safetensors; only the tensors asked for are
read, and an index file, where present, keeps the other shards closed. The language model is read
only for the end-to-end pipeline claims.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Where released checkpoints keep the vision tower, newest layout first.
VISION_PREFIXES = ("model.visual.", "visual.")
# The language model and its head, as ``Qwen3VLForConditionalGeneration`` names them.
LANGUAGE_PREFIXES = ("model.language_model.", "lm_head.")


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def checkpoint_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the folder's files (weights, config, tokenizer, processor config):
    enough to notice a changed checkpoint."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def shards_holding(folder: Path, prefixes: tuple[str, ...] = VISION_PREFIXES) -> dict[Path, list[str]]:
    """The safetensors files that hold tensors named with ``prefixes`` (the vision tower's by default),
    with those tensors' names.

    With a ``model.safetensors.index.json`` only the shards it names for those tensors are opened
    at all, so the other shards are never read.
    """
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        shards: dict[Path, list[str]] = {}
        for name, shard in weight_map.items():
            if name.startswith(prefixes):
                shards.setdefault(folder / shard, []).append(name)
        return shards
    shards = {}
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            names = [name for name in handle.keys() if name.startswith(prefixes)]  # noqa: SIM118
        if names:
            shards[path] = names
    return shards


def load_vision_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the vision tower's tensors of a local checkpoint into ``model``, strictly, as float32."""
    import torch
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path, names in shards_holding(folder).items():
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


def load_language_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the language model and ``lm_head`` of a local checkpoint into a whole
    ``Qwen3VLForConditionalGeneration``, strictly over those tensors (a tied head may be absent)."""
    from safetensors import safe_open

    expected = {k for k in model.state_dict() if k.startswith(LANGUAGE_PREFIXES)}
    state = {}
    for path, names in shards_holding(folder, LANGUAGE_PREFIXES).items():
        with safe_open(str(path), framework="pt") as handle:
            for name in names:
                state[name] = handle.get_tensor(name)
    if not state:
        raise ConfigError(f"{folder}: no language-model tensors (names starting with {' or '.join(LANGUAGE_PREFIXES)})")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    missing = sorted(expected - set(state) - ({"lm_head.weight"} if tied else set()))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{folder}: language-model tensors do not fit the config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        problem = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"{folder}: language-model tensors do not fit the config: {problem}") from None
    if tied:
        model.tie_weights()
