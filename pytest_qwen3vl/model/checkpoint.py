"""Local checkpoint folders: which weight files hold the vision tower or the language model, and
loading them.

transformers writes ``model.safetensors`` or, with ``safe_serialization=False`` (4.x) or a plain
``torch.save`` of the state dict, ``pytorch_model.bin``; either may be sharded with an index
(``model.safetensors.index.json``, ``pytorch_model.bin.index.json``). ``find_weights`` checks every
weight file without reading its tensors (a safetensors header, a zip's directory and pickle), so a
clone without ``git lfs pull``, a truncated download or an index naming a missing shard is a one-line
``ConfigError`` when the settings are read, never seeded weights in the checkpoint's place. Loading
then reads only the tensors asked for: the language model only for the end-to-end pipeline claims.
"""

from __future__ import annotations

import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Qwen3-Omni's checkpoints keep the thinker (vision tower, language model, audio tower) under this
# prefix: released ones as ``thinker.visual.`` and ``thinker.model.``, ones saved by transformers 5.x
# maybe as it names them inside (``thinker.model.visual.``, ``thinker.model.language_model.``).
THINKER = "thinker."
# Where released checkpoints keep the vision tower, newest layout first, Qwen3-Omni's last.
VISION_PREFIXES = ("model.visual.", "visual.", f"{THINKER}visual.", f"{THINKER}model.visual.")
# The language model and its head, as ``Qwen3VLForConditionalGeneration`` names them.
LANGUAGE_PREFIXES = ("model.language_model.", "lm_head.")
# The formats read, in transformers' order of preference: (format, index file, files without an index).
FORMATS = (
    ("safetensors", "model.safetensors.index.json", "*.safetensors"),
    ("bin", "pytorch_model.bin.index.json", "pytorch_model*.bin"),
)
# Weights in formats this plugin does not read: a folder holding only these is refused, not taken as
# a config without weights.
UNREAD_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.gguf")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class Weights:
    """A folder's weight files of one format, each with the tensor names it holds, all checked readable.

    For ``pytorch_model*.bin`` the names are the strings of the file's pickle: every tensor name is
    among them (with a few others, such as ``storage`` and ``cpu``, that no prefix selects).
    """

    folder: Path
    format: str
    names: dict[Path, tuple[str, ...]]

    def holding(self, prefixes: tuple[str, ...]) -> dict[Path, list[str]]:
        """The files that hold names starting with ``prefixes``, with those names."""
        found = {path: [n for n in names if n.startswith(prefixes)] for path, names in self.names.items()}
        return {path: names for path, names in found.items() if names}

    def describe(self) -> str:
        """``model.safetensors``, ``pytorch_model.bin``, or the shard count and format."""
        if len(self.names) == 1:
            return next(iter(self.names)).name
        return f"{len(self.names)} {self.format} shards"


def checkpoint_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the folder's files (weights, config, tokenizer, processor config):
    enough to notice a changed checkpoint."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def find_weights(folder: Path) -> Weights | None:
    """The folder's weights, or None for a folder that holds no weight file at all (a config only).

    Raises ``ConfigError`` for weights that cannot be read: a git-lfs pointer, a truncated file, an
    index naming a missing shard or a tensor its shard lacks, weights in a format not read here, or a
    checkpoint without vision tensors.
    """
    for kind, index_name, pattern in FORMATS:
        index = folder / index_name
        weight_map = read_index(index) if index.is_file() else None
        files = sorted({folder / shard for shard in weight_map.values()} if weight_map else folder.glob(pattern))
        if not files:
            continue
        if missing := [path.name for path in files if not path.is_file()]:
            raise ConfigError(f"{index}: names {missing[0]}, which is not in the folder "
                              f"({len(missing)} of {len(files)} shards missing)")
        weights = Weights(folder, kind, {path: tensor_names(path, kind) for path in files})
        for name, shard in (weight_map or {}).items():
            if name not in weights.names[folder / shard]:
                raise ConfigError(f"{index}: puts {name} in {shard}, which does not hold it")
        vision_prefix(weights)
        return weights
    if unread := sorted({p.name for pattern in UNREAD_WEIGHTS for p in folder.glob(pattern)}):
        raise ConfigError(f"{folder}: {unread[0]} is not a weights file read here (model.safetensors or "
                          "pytorch_model.bin, sharded with their index or not)")
    return None


def read_index(index: Path) -> dict[str, str]:
    """An index file's ``weight_map``: tensor name -> shard file name."""
    check_not_pointer(index)
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{index}: not an index of shards ({type(exc).__name__}: {exc})") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConfigError(f"{index}: its weight_map is not a map of tensor names to shard files")
    return weight_map


def check_not_pointer(path: Path) -> None:
    """A git-lfs pointer stands where the file should be in a clone made without ``git lfs pull``."""
    with path.open("rb") as handle:
        if handle.read(len(LFS_POINTER)) == LFS_POINTER:
            raise ConfigError(f"{path}: a git-lfs pointer, not the file: run `git lfs pull` in {path.parent}")


def tensor_names(path: Path, kind: str) -> tuple[str, ...]:
    """The names a weights file holds, read from its header (safetensors) or its pickle (``.bin``),
    after checking that the file is whole."""
    check_not_pointer(path)
    return safetensors_names(path) if kind == "safetensors" else bin_names(path)


def safetensors_names(path: Path) -> tuple[str, ...]:
    """The header's tensor names; the file must be as long as the header says its data is."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            raise ConfigError(f"{path}: truncated or not a safetensors file ({size} bytes, "
                              f"header of {length} bytes announced)")
        try:
            header = json.loads(handle.read(length))
            entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
            end = max((int(entry["data_offsets"][1]) for entry in entries.values()), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a safetensors file (header: {type(exc).__name__}: {exc})") from None
    if size < 8 + length + end:
        raise ConfigError(f"{path}: truncated: {size} bytes, its header needs {8 + length + end}")
    return tuple(entries)


def bin_names(path: Path) -> tuple[str, ...]:
    """The strings of a ``torch.save`` zip's pickle (its tensor names among them), read without
    unpickling; a truncated zip has lost its directory, which sits at the end."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
        raise ConfigError(f"{path}: truncated" if zipped else
                          f"{path}: not a zip file as torch.save writes (saved by torch before 1.6? "
                          "load it and save it again)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickle_name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            data = archive.read(pickle_name)
        return tuple(str(arg) for op, arg, _ in pickletools.genops(data) if "UNICODE" in op.name)
    except (StopIteration, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a state dict as torch.save writes ({type(exc).__name__}: {exc})") from None


def vision_prefix(weights: Weights) -> str:
    """The one prefix the checkpoint's vision tensors carry (``model.visual.`` or ``visual.``)."""
    found = [prefix for prefix in VISION_PREFIXES if weights.holding((prefix,))]
    if not found:
        raise ConfigError(f"{weights.folder}: no vision tensors (names starting with "
                          f"{' or '.join(VISION_PREFIXES)}) in {weights.describe()}")
    if len(found) > 1:
        raise ConfigError(f"{weights.folder}: vision tensors under both {found[0]} and {found[1]}: "
                          "which tower is meant?")
    return found[0]


def checkpoint_weights(folder: Path) -> Weights:
    """``find_weights`` of a folder that must hold weights."""
    weights = find_weights(folder)
    if weights is None:
        raise ConfigError(f"{folder}: no weights file (model.safetensors or pytorch_model.bin)")
    return weights


def read_tensors(weights: Weights, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors whose names start with ``prefixes``, by name, as saved; only the files
    that hold them are opened (a ``.bin`` memory-mapped, so its other tensors are never read)."""
    import torch
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path, names in weights.holding(prefixes).items():
        if weights.format == "safetensors":
            with safe_open(str(path), framework="pt") as handle:
                state |= {name: handle.get_tensor(name) for name in names}
            continue
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises RuntimeError, UnpicklingError and others for a damaged file
            problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{path}: cannot be read: {problem}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
        state |= {name: tensor for name, tensor in loaded.items() if name.startswith(prefixes)}
    return state


def load_vision_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the vision tower's tensors of a local checkpoint into ``model``, strictly, as float32."""
    import torch

    weights = checkpoint_weights(folder)
    prefix = vision_prefix(weights)
    tensors = read_tensors(weights, (prefix,))
    state = {name.removeprefix(prefix): tensor.to(torch.float32) for name, tensor in tensors.items()}
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


def load_language_weights(model: torch.nn.Module, folder: Path, language: str) -> None:
    """Load the language model and ``lm_head`` of a local checkpoint into a whole model, strictly over
    those tensors (a tied head may be absent). ``language`` is where the whole model keeps its text
    model (Qwen3-Omni's thinker under transformers 4.57.6: ``model.``); a Qwen3-Omni checkpoint's are
    read under ``thinker.``."""
    weights = checkpoint_weights(folder)
    if weights.holding((THINKER,)):
        inside = f"{THINKER}model.language_model."
        text = inside if weights.holding((inside,)) else f"{THINKER}model."
        layout = {text: language, f"{THINKER}lm_head.": "lm_head."}
    else:
        layout = {"model.language_model.": language, "lm_head.": "lm_head."}
    expected = {k for k in model.state_dict() if k.startswith((language, "lm_head."))}
    state = {own + name.removeprefix(saved): tensor
             for saved, own in layout.items() for name, tensor in read_tensors(weights, (saved,)).items()}
    if not state:
        raise ConfigError(f"{folder}: no language-model tensors (names starting with {' or '.join(layout)})")
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
