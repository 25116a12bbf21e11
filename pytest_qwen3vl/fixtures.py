"""The plugin's fixtures: each turns settings into a call of the module that does the work.

Session scope for everything expensive: both models are built once per session (per xdist
worker) and every test reads them. Tests must not change a model persistently; helpers that
set a flag or an attention implementation restore it.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from pytest_qwen3vl import sources
from pytest_qwen3vl.claims import ClaimRecorder
from pytest_qwen3vl.settings import Grid, Settings

if TYPE_CHECKING:
    import torch

    from pytest_qwen3vl.inputs import VisionInputs
    from pytest_qwen3vl.models import ModelSpec, VisionPair

SETTINGS_KEY = pytest.StashKey[Settings]()


def settings_of(config: pytest.Config) -> Settings:
    """The run's settings, made once in ``pytest_configure``."""
    return config.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def qwen3vl_settings(pytestconfig: pytest.Config) -> Settings:
    """Everything the run was asked to do (grids, files, config, seed, cache)."""
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def qwen3vl_grid(qwen3vl_settings: Settings) -> Grid:
    """The grid of the current test: the plugin parametrizes it once per ``--qwen3vl-grid``."""
    return qwen3vl_settings.grids[0]


@pytest.fixture(scope="session")
def qwen3vl_config(qwen3vl_settings: Settings) -> ModelSpec:
    """The model config as a ``ModelSpec``: ``.vision`` and ``.text`` dicts, ``.name``."""
    return qwen3vl_settings.model


@pytest.fixture(scope="session")
def qwen3vl_golden_path(qwen3vl_settings: Settings) -> Path:
    """The golden modeling file (checked against transformers 4.57.6's hash)."""
    if qwen3vl_settings.golden is None:
        pytest.fail("transformers is not installed: pip install 'transformers==4.57.6'", pytrace=False)
    try:
        sources.check_golden(qwen3vl_settings.golden)
    except sources.SourceError as exc:
        problem = str(exc)
    else:
        return qwen3vl_settings.golden
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_modified_path(qwen3vl_settings: Settings, qwen3vl_golden_path: Path) -> Path:
    """The user's modified file, or the reference change written to the cache."""
    if qwen3vl_settings.modified is not None:
        return qwen3vl_settings.modified
    return sources.write_reference_modified(qwen3vl_golden_path, qwen3vl_settings.cache_dir)


def _import(path: Path, role: str) -> ModuleType:
    """Import, or fail the test with the file and line: no stack trace through the plugin."""
    try:
        return sources.import_modeling_file(path, role)
    except sources.SourceError as exc:
        problem = str(exc)
    pytest.fail(f"{role} modeling file does not import: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_golden_module(qwen3vl_golden_path: Path) -> ModuleType:
    """The golden file imported inside ``transformers.models.qwen3_vl``."""
    return _import(qwen3vl_golden_path, "golden")


@pytest.fixture(scope="session")
def qwen3vl_modified_module(qwen3vl_modified_path: Path) -> ModuleType:
    """The modified file imported inside ``transformers.models.qwen3_vl``; relative imports resolve."""
    return _import(qwen3vl_modified_path, "modified")


@pytest.fixture(scope="session")
def qwen3vl_vision_pair(
    qwen3vl_golden_module: ModuleType,
    qwen3vl_modified_module: ModuleType,
    qwen3vl_config: ModelSpec,
    qwen3vl_settings: Settings,
) -> VisionPair:
    """Golden and modified vision models sharing parameters and persistent buffers."""
    from pytest_qwen3vl.models import build_pair

    try:
        return build_pair(qwen3vl_golden_module, qwen3vl_modified_module, qwen3vl_config, qwen3vl_settings.seed)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"cannot build the vision models of {qwen3vl_config.name}: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_golden_vision(qwen3vl_vision_pair: VisionPair) -> torch.nn.Module:
    """Golden ``Qwen3VLVisionModel``: eval, float32, CPU, seeded random weights."""
    return qwen3vl_vision_pair.golden


@pytest.fixture(scope="session")
def qwen3vl_modified_vision(qwen3vl_vision_pair: VisionPair) -> torch.nn.Module:
    """Modified ``Qwen3VLVisionModel`` with golden's very weights."""
    return qwen3vl_vision_pair.modified


@pytest.fixture(scope="session")
def qwen3vl_inputs(qwen3vl_grid: Grid, qwen3vl_config: ModelSpec, qwen3vl_settings: Settings) -> VisionInputs:
    """``pixel_values`` (N, 1536) and ``grid_thw`` (M, 3) for the current grid, drawn from the seed."""
    from pytest_qwen3vl.inputs import make_inputs

    return make_inputs(qwen3vl_grid, qwen3vl_config, qwen3vl_settings.seed)


@pytest.fixture
def qwen3vl_record(request: pytest.FixtureRequest) -> ClaimRecorder:
    """Record what the test measured for the claim(s) of its ``qwen3vl_claim`` marker."""
    return ClaimRecorder(request.node)
