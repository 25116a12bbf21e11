"""Seeded vision inputs for a grid: ``pixel_values`` (N, 1536) and ``image_grid_thw`` (M, 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec


# torch generators take seeds of 64 bits; numpy's and most users' tools 32. One rule for every entry point.
MAX_SEED = 2**32 - 1


def check_seed(value: str | int) -> int:
    """A seed as an integer from 0 to ``MAX_SEED``; ``SettingsError`` otherwise (callers name their option)."""
    from pytest_qwen3vl.errors import SettingsError

    try:
        seed = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{value!r}: not an integer") from None
    if not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"{value!r}: must be from 0 to {MAX_SEED}")
    return seed


@dataclass(frozen=True)
class VisionInputs:
    """What a downstream builder feeds the vision encoder for one call."""

    grid: Grid
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor

    @property
    def args(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Positional arguments of ``Qwen3VLVisionModel.forward``."""
        return self.pixel_values, self.grid_thw


def patch_dim(spec: ModelSpec) -> int:
    """Width of one row of ``pixel_values``: channels x temporal patch x patch^2."""
    v = spec.vision
    return int(v.get("in_channels", 3)) * int(v.get("temporal_patch_size", 2)) * int(v.get("patch_size", 16)) ** 2


def make_inputs(grid: Grid, spec: ModelSpec, seed: int) -> VisionInputs:
    """Standard-normal patches drawn from ``seed``; the same seed and grid give the same tensors."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(grid.num_patches, patch_dim(spec), generator=generator, dtype=torch.float32)
    grid_thw = torch.tensor(grid.images, dtype=torch.int64)
    return VisionInputs(grid, pixel_values, grid_thw)


def trace_inputs(model: torch.nn.Module, grid: Grid, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``pixel_values`` and ``grid_thw`` for ``grid``, sized from the model's own config: what a
    file made from ``model`` is traced and checked on."""
    from pytest_qwen3vl.model.configs import ModelSpec

    config = model.config
    geometry = {key: getattr(config, key) for key in ("in_channels", "temporal_patch_size", "patch_size")}
    return make_inputs(grid, ModelSpec("trace", geometry), seed).args
