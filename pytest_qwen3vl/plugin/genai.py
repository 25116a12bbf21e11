"""The onnxruntime-genai model folder a test session checks, made once per run and shared by workers.

By default: a checkpoint written from the config's preset and seed (``model/write_checkpoint.py``)
or the checkpoint folder named by ``--qwen3vl-config``, then a genai folder made from it by genai's
own builder; both live in the content-addressed ``ArtifactCache`` under ``<cache dir>/genai``. The
vision file is the report's (the session's modified pooled export), given to genai by a config
overlay. With ``--qwen3vl-genai-folder`` the user's folder is checked as it is, with its own
vision file, against the checkpoint named by ``--qwen3vl-config``.

Every reason these claims cannot run here (genai not installed, a real-size preset, a checkpoint
without a language model) is a ``NotRunnable`` whose text the rows show: never a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError, GenaiFolderError, NotRunnable
from pytest_qwen3vl.model.checkpoint import checkpoint_fingerprint
from pytest_qwen3vl.model.grids import DEFAULT_GRID, MAX_PATCHES, MIN_PATCHES, Grid
from pytest_qwen3vl.plugin.settings import CONFIG, GENAI_FOLDER, flag
from pytest_qwen3vl.runtimes.genai import OnnxRuntimeGenai
from pytest_qwen3vl.runtimes.genai_folder import CONFIG_FILE, build_session_folder, genai_missing
from pytest_qwen3vl.source.files import file_family, sha256_file
from pytest_qwen3vl.store.cache import MAKING, ArtifactCache, Fallbacks, code_digest
from pytest_qwen3vl.versions import EXPORT_LIBRARIES, library_versions

if TYPE_CHECKING:
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.plugin.settings import Settings

GENAI_LIBRARIES = (*EXPORT_LIBRARIES, "onnxruntime-genai", "onnx-ir", "tokenizers", "safetensors")


def genai_grid(grid: Grid) -> Grid:
    """A one-image grid the released processor emits for an image of 16*H x 16*W pixels: the run's
    first image when it is one (T = 1, within the pixel budget), else the report's 1x24x24."""
    t, h, w = grid.images[0]
    if t == 1 and MIN_PATCHES <= h * w <= MAX_PATCHES:
        return Grid.parse(f"1,{h},{w}")
    return DEFAULT_GRID


class SessionGenai:
    """The session's genai folder, checkpoint and transformers reference, each made once."""

    def __init__(self, settings: Settings, golden: Path, on_event: Callable[[str], None] | None = None,
                 fallbacks: Fallbacks | None = None) -> None:
        self.settings = settings
        self.spec: ModelSpec = settings.model
        self.grid = genai_grid(settings.grids[0])
        self.cache = ArtifactCache(settings.cache_dir / "genai", on_event, (fallbacks or Fallbacks()).under("genai"))
        self._golden_digest = sha256_file(golden)
        self.family = file_family(golden)
        self._reference: torch.nn.Module | None = None
        self._folder: Path | None = None

    @property
    def user_folder(self) -> Path | None:
        return self.settings.genai_folder

    def check_runnable(self) -> None:
        """Raise ``NotRunnable`` with the reason these claims cannot run in this session."""
        missing = genai_missing()
        if missing:
            raise NotRunnable(f"not run: {missing}")
        if self.spec.checkpoint is None and self.user_folder is not None:
            raise NotRunnable(f"not run: {flag(GENAI_FOLDER)} needs {flag(CONFIG)}=<the checkpoint folder it "
                              "was made from>")
        if self.spec.checkpoint is None and self.spec.name != "tiny":
            raise NotRunnable(f"not run: the genai claims build a whole model; use the tiny config or "
                              f"{flag(CONFIG)}=<checkpoint folder>, not {self.spec.name}")
        if self.spec.checkpoint is not None:
            folder = self.spec.checkpoint
            if not (folder / "tokenizer.json").is_file() or not (folder / "preprocessor_config.json").is_file():
                raise NotRunnable(f"not run: {folder} has no tokenizer.json or preprocessor_config.json "
                                  "(qwen3vl-checkpoint writes both)")

    def check_whole_model(self) -> None:
        """Raise ``NotRunnable`` for the claims that generate with a whole model of a family whose language
        model genai's builder does not make (the processor claim needs none)."""
        if not self.family.genai_built:
            raise NotRunnable(self.family.not_generated())

    def _checkpoint_parts(self) -> dict[str, str]:
        """What the checkpoint written from the preset is made from."""
        return {
            "config": self.spec.name,
            "seed": str(self.settings.seed),
            "golden": self._golden_digest,
            "libraries": json.dumps(library_versions(GENAI_LIBRARIES), sort_keys=True),
            "recipe": code_digest(*MAKING, "runtimes"),
        }

    def checkpoint(self) -> Path:
        """The checkpoint folder: the user's, or one written from the preset and seed (cached)."""
        if self.spec.checkpoint is not None:
            return self.spec.checkpoint
        from pytest_qwen3vl.model.write_checkpoint import write_checkpoint

        def build(path: Path) -> None:
            write_checkpoint(path.parent, self.spec.name, self.settings.seed)

        return self.cache.get_or_create(self._checkpoint_parts(), "config.json", build).parent

    def folder(self) -> Path:
        """The genai folder: the user's, or one made from the checkpoint by genai's builder (cached). A
        checkpoint the cache wrote is named by what it is made from, not by where the cache is, so a
        cache copied or restored elsewhere still serves the folder."""
        if self.user_folder is not None:
            return self.user_folder
        if self._folder is not None:  # made or verified once per process
            return self._folder
        checkpoint = self.checkpoint()
        made = json.dumps(self._checkpoint_parts(), sort_keys=True) if self.spec.checkpoint is None else None
        parts = {
            "checkpoint": made or f"{checkpoint}:{checkpoint_fingerprint(checkpoint)}",
            "libraries": json.dumps(library_versions(GENAI_LIBRARIES), sort_keys=True),
            "recipe": code_digest(*MAKING, "runtimes"),
        }

        def build(path: Path) -> None:
            build_session_folder(checkpoint, path.parent)

        self._folder = self.cache.get_or_create(parts, CONFIG_FILE, build).parent
        return self._folder

    def runtime_folder(self) -> Path:
        """The folder, or ``NotRunnable`` with the reason it cannot be used here (genai not installed, a
        config it cannot build, genai's builder failing): that is our build, never the file's verdict."""
        self.check_runnable()
        try:
            return self.folder()
        except (GenaiFolderError, ConfigError) as exc:
            raise NotRunnable(f"not run: {exc}") from exc

    def runtime(self) -> OnnxRuntimeGenai:
        """onnxruntime-genai on the folder: ``runtime().load(vision)`` is genai's model with that vision file."""
        return OnnxRuntimeGenai(self.runtime_folder)

    def reference(self) -> Any:
        """transformers' whole model from the checkpoint (the installed transformers' golden file), once."""
        if self._reference is None:
            from pytest_qwen3vl.model.generation import load_full_model

            self._reference = load_full_model(self.checkpoint())
        return self._reference


def write_image(path: Path, height: int, width: int, seed: int) -> Path:
    """A smooth seeded RGB PNG (8x8 noise, upscaled bilinearly): no resize in either processor is exact
    on noise, and a smooth picture keeps the comparison about the processors, not about aliasing."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(path)
    return path
