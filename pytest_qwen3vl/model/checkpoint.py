"""Local checkpoint folders: which safetensors shards hold the vision tower, and loading it.

Released checkpoints keep the whole model in (sharded) safetensors; only the vision tower's tensors
are read, and an index file, where present, keeps the language model's shards closed.
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


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def checkpoint_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the weight files: enough to notice a changed checkpoint."""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weight_files(folder))


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
    for path in weight_files(folder):
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
