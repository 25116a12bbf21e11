"""The plugin's fixtures: each turns settings into a call of the module that does the work.

Session scope for everything expensive: both models are built once per session (per xdist
worker) and every test reads them. Tests must not change a model persistently; helpers that
set a flag or an attention implementation restore it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.plugin.claims import ClaimRecorder
from pytest_qwen3vl.plugin.settings import Settings, settings_of
from pytest_qwen3vl.plugin.worker import MODELS_IMPORTED
from pytest_qwen3vl.source import files as sources
from pytest_qwen3vl.source.fingerprints import fork_mismatch

if TYPE_CHECKING:
    import torch
    from syrupy.assertion import SnapshotAssertion

    from pytest_qwen3vl.judge.artefact import ArtefactCheck
    from pytest_qwen3vl.judge.gate import GateTable
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.model.build import VisionPair
    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.model.eager import EagerRuns
    from pytest_qwen3vl.model.inputs import VisionInputs
    from pytest_qwen3vl.plugin.exports import SessionExports
    from pytest_qwen3vl.plugin.genai import SessionGenai
    from pytest_qwen3vl.store.cache import Fallbacks


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
def qwen3vl_golden(qwen3vl_settings: Settings) -> sources.GoldenFile:
    """The golden file and its transformers version (verified by sha256, or the installed unmeasured one)."""
    if qwen3vl_settings.golden is None:
        pytest.fail(sources.TRANSFORMERS_MISSING, pytrace=False)
    try:
        return sources.check_golden(qwen3vl_settings.golden)
    except SourceError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_golden_path(qwen3vl_golden: sources.GoldenFile) -> Path:
    """The golden modeling file (a known version's by sha256, or the installed file of another version)."""
    return qwen3vl_golden.path


@pytest.fixture(scope="session")
def qwen3vl_modified_path(
    pytestconfig: pytest.Config, qwen3vl_settings: Settings, qwen3vl_golden: sources.GoldenFile
) -> Path:
    """The user's modified file, or the reference change written to the cache.

    A fork made from another known transformers version than golden's fails here in one line:
    every comparison with golden would otherwise list the versions' differences as its changes.
    """
    if qwen3vl_settings.modified is None:
        return _reference_modified(pytestconfig, qwen3vl_settings, qwen3vl_golden.path)
    mismatch = fork_mismatch(qwen3vl_settings.modified, qwen3vl_golden.version)
    if mismatch:
        pytest.fail(f"{qwen3vl_settings.modified}: {mismatch}", pytrace=False)
    return qwen3vl_settings.modified


def _reference_modified(config: pytest.Config, settings: Settings, golden: Path) -> Path:
    """The reference modified file in the cache folder, or in the session's spare when the cache refuses
    the write (said once in the summary); "not run" when neither takes it."""
    from pytest_qwen3vl.errors import CacheUnusable
    from pytest_qwen3vl.plugin.exports import TALLY_KEY
    from pytest_qwen3vl.store.cache import storage_fault

    spare = settings.spare_cache
    folders = [settings.cache_dir, *([spare] if spare is not None and spare != settings.cache_dir else [])]
    why = ""
    for folder in folders:
        try:
            return sources.write_reference_modified(golden, folder)
        except OSError as exc:
            if not storage_fault(exc):
                raise
            why = exc.strerror or type(exc).__name__
        if folder != folders[-1]:
            config.stash[TALLY_KEY].fault(why)
    raise CacheUnusable(f"not run: no cache folder takes the reference modified file ({why})")


def _fallbacks(config: pytest.Config, settings: Settings) -> Fallbacks:
    """What the session's caches do when theirs refuses a write or another session holds a lock: the
    spare, the summary's tally, the lock bound, and a line on the terminal while waiting."""
    from pytest_qwen3vl.plugin.exports import TALLY_KEY
    from pytest_qwen3vl.store.cache import Fallbacks

    def say_now(line: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return Fallbacks(spare=settings.spare_cache, on_fault=config.stash[TALLY_KEY].fault,
                     lock_timeout=settings.lock_timeout, on_wait=say_now)


def _import(config: pytest.Config, path: Path, role: str) -> ModuleType:
    """Import, or fail the test with the file and line: no stack trace through the plugin."""
    config.stash[MODELS_IMPORTED] = True
    try:
        return sources.import_modeling_file(path, role)
    except SourceError as exc:
        problem = str(exc)
    pytest.fail(f"{role} modeling file does not import: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_golden_module(pytestconfig: pytest.Config, qwen3vl_golden_path: Path) -> ModuleType:
    """The golden file imported inside ``transformers.models.qwen3_vl``."""
    return _import(pytestconfig, qwen3vl_golden_path, "golden")


@pytest.fixture(scope="session")
def qwen3vl_modified_module(pytestconfig: pytest.Config, qwen3vl_modified_path: Path) -> ModuleType:
    """The modified file imported inside ``transformers.models.qwen3_vl``; relative imports resolve."""
    return _import(pytestconfig, qwen3vl_modified_path, "modified")


@pytest.fixture(scope="session")
def qwen3vl_vision_pair(
    qwen3vl_golden_module: ModuleType,
    qwen3vl_modified_module: ModuleType,
    qwen3vl_config: ModelSpec,
    qwen3vl_settings: Settings,
) -> VisionPair:
    """Golden and modified vision models sharing parameters and persistent buffers."""
    import torch

    from pytest_qwen3vl.model.build import build_pair
    from pytest_qwen3vl.runtimes.onnxruntime import default_threads

    # xdist workers share the cores: without this each takes all of them and they thrash.
    torch.set_num_threads(default_threads())
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
    from pytest_qwen3vl.model.inputs import make_inputs

    return make_inputs(qwen3vl_grid, qwen3vl_config, qwen3vl_settings.seed)


@pytest.fixture(scope="session")
def qwen3vl_eager_inputs(qwen3vl_config: ModelSpec, qwen3vl_settings: Settings) -> tuple[VisionInputs, ...]:
    """Inputs for every grid of the eager claims (``Settings.eager_grids``: the sweep and the run's grids)."""
    from pytest_qwen3vl.model.inputs import make_inputs

    return tuple(make_inputs(grid, qwen3vl_config, qwen3vl_settings.seed) for grid in qwen3vl_settings.eager_grids)


@pytest.fixture(scope="session")
def qwen3vl_eager_runs(
    qwen3vl_vision_pair: VisionPair, qwen3vl_eager_inputs: tuple[VisionInputs, ...]
) -> EagerRuns:
    """``qwen3vl_eager_runs(which, grid) -> EagerRun``: the "golden" or "modified" model's forward on an
    eager grid, flag unset (``.outputs``, and ``.calls`` of the first block's attention), run once per
    process for every claim that reads it."""
    from pytest_qwen3vl.model.eager import EagerRuns

    pair = qwen3vl_vision_pair
    return EagerRuns({"golden": pair.golden, "modified": pair.modified}, qwen3vl_eager_inputs)


@pytest.fixture
def qwen3vl_record(request: pytest.FixtureRequest) -> ClaimRecorder:
    """Record what the test measured for the claim(s) of its ``qwen3vl_claim`` marker."""
    return ClaimRecorder(request.node)


@pytest.fixture(scope="session")
def qwen3vl_export(
    pytestconfig: pytest.Config,
    qwen3vl_vision_pair: VisionPair,
    qwen3vl_golden_path: Path,
    qwen3vl_modified_path: Path,
    qwen3vl_config: ModelSpec,
    qwen3vl_settings: Settings,
) -> SessionExports:
    """Exported ONNX files, each made once per run however many xdist workers ask for it.

    ``qwen3vl_export(which, grid, wrapper="pooled", exporter="torchscript") -> Path``: ``which`` is
    "golden" or "modified", ``wrapper`` "pooled" (the merged embeddings, flag set), "first" (the
    report's ``outputs[0]``), "all", "stacked" or "tuple", ``exporter`` "torchscript" or "dynamo".
    Files live in the content-addressed cache under ``<cache dir>/exports`` (keyed by the source
    files, config, seed, grid, wrapper, exporter, opset, library versions and the plugin's code),
    verified before reuse, and must not be modified. A failed export raises ``ExportFailed`` with a
    one-line ``summary``; the cache remembers it, so asking again (in this run or a later one with
    the same inputs) raises it again without retrying. ``.recipe(which, name, grid)`` exports a
    recipe of ``qwen3vl-export`` the same way.
    ``qwen3vl_export.session(path)`` is an ONNX Runtime session per file; ``.sweep(path)`` what the file
    serves on the sweep against golden, ``.signature(path)`` and ``.digest(path)`` its graph signature
    and digest (each measured once per file content and kept in the cache);
    ``.deepstack_calls(which, grid, trace=..., flag=...)`` and ``.trace_hazards(which, grid)`` what
    running or tracing a model does (measured once per model and grid, and kept); ``.builds`` the
    exports this process ran (``<cache dir>/exports/builds.log`` has every worker's).
    """
    from pytest_qwen3vl.plugin.exports import TALLY_KEY, SessionExports

    return SessionExports(
        qwen3vl_vision_pair,
        {"golden": qwen3vl_golden_path, "modified": qwen3vl_modified_path},
        qwen3vl_config,
        qwen3vl_settings.seed,
        qwen3vl_settings.export_cache,
        on_event=pytestconfig.stash[TALLY_KEY].add,
        fallbacks=_fallbacks(pytestconfig, qwen3vl_settings).under("exports"),
    )


@pytest.fixture(scope="session")
def qwen3vl_genai(pytestconfig: pytest.Config, qwen3vl_settings: Settings, qwen3vl_golden_path: Path) -> SessionGenai:
    """The onnxruntime-genai folder the "In the runtime" claims check, and its transformers reference.

    Skips (the rows say "not run: <why>") when onnxruntime-genai is not installed or the config
    cannot give a whole model. ``.folder()`` and ``.checkpoint()`` are made once per run in the
    content-addressed cache under ``<cache dir>/genai``; ``.reference()`` is transformers' model.
    """
    from pytest_qwen3vl.errors import NotRunnable
    from pytest_qwen3vl.plugin.exports import TALLY_KEY
    from pytest_qwen3vl.plugin.genai import SessionGenai

    genai = SessionGenai(qwen3vl_settings, qwen3vl_golden_path, on_event=pytestconfig.stash[TALLY_KEY].add,
                         fallbacks=_fallbacks(pytestconfig, qwen3vl_settings))
    try:
        genai.check_runnable()
    except NotRunnable as exc:
        pytest.skip(str(exc))
    return genai


GATE_ROLES = ("golden", "modified", "reference")


@pytest.fixture(scope="session")
def qwen3vl_gate(
    pytestconfig: pytest.Config,
    qwen3vl_settings: Settings,
    qwen3vl_golden_path: Path,
    qwen3vl_modified_path: Path,
    qwen3vl_golden_module: ModuleType,
    qwen3vl_modified_module: ModuleType,
) -> Callable[[str], GateTable]:
    """``qwen3vl_gate(which) -> GateTable``: the DeepStack condition of "golden", "modified" or
    "reference" (the report's condition in golden's module) run under each exporter, flag unset,
    False and True. Measured once per condition text, library versions and file (``<cache dir>/gates``)."""
    from pytest_qwen3vl.judge.gate import condition_of, gate_table
    from pytest_qwen3vl.store.cache import ArtifactCache

    cache = ArtifactCache(qwen3vl_settings.cache_dir / "gates",
                          fallbacks=_fallbacks(pytestconfig, qwen3vl_settings).under("gates"))
    tables: dict[str, GateTable] = {}

    def table(which: str) -> GateTable:
        if which not in GATE_ROLES:
            raise ValueError(f"which must be one of {', '.join(GATE_ROLES)}, not {which!r}")
        if which not in tables:
            path = qwen3vl_modified_path if which == "modified" else qwen3vl_golden_path
            module = qwen3vl_modified_module if which == "modified" else qwen3vl_golden_module
            if which == "reference":
                test = sources.MODIFIED_CONDITION
            else:
                try:
                    test = condition_of(path)
                except (LookupError, SourceError) as exc:
                    pytest.fail(f"{which}: {exc}", pytrace=False)
            tables[which] = gate_table(test, module, cache, source=path)
        return tables[which]

    return table


@pytest.fixture
def qwen3vl_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Syrupy's ``snapshot`` storing the version-free contract of a graph signature as JSON.

    Compare ``pytest_qwen3vl.plugin.snapshots.contract_document(graph_signature(path))``. The file is
    ``<snapshot dir>/<module>/<test>[<params>-<config>-<grid>].json``; the test is skipped when it
    is missing and ``--snapshot-update`` was not given. One assertion per test.
    """
    from pytest_qwen3vl.plugin.snapshots import SignatureSnapshot, snapshot_for

    return snapshot_for(snapshot, SignatureSnapshot)


@pytest.fixture
def qwen3vl_lowering_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Like ``qwen3vl_snapshot``, for ``lowering_document`` (operators, initializers): these depend on
    torch and onnx, so they are stored per version and skipped on versions with no snapshot."""
    from pytest_qwen3vl.plugin.snapshots import LoweringSnapshot, snapshot_for

    return snapshot_for(snapshot, LoweringSnapshot)


@pytest.fixture(scope="session")
def qwen3vl_onnx_file(qwen3vl_settings: Settings) -> Path:
    """The ``--qwen3vl-onnx`` file of the current test. The plugin parametrizes it once per file
    (``pytest_generate_tests``), which replaces this body; it runs only where that did not happen."""
    pytest.skip("no --qwen3vl-onnx file given")


@pytest.fixture(scope="session")
def qwen3vl_artefact_golden(
    qwen3vl_golden_vision: torch.nn.Module, qwen3vl_config: ModelSpec, qwen3vl_settings: Settings
) -> GoldenRuns:
    """Golden's outputs and module activations per grid, computed once per process for every file."""
    from pytest_qwen3vl.judge.golden import GoldenRuns

    return GoldenRuns(qwen3vl_golden_vision, qwen3vl_config, qwen3vl_settings.seed)


@pytest.fixture(scope="session")
def qwen3vl_artefact(
    qwen3vl_onnx_file: Path, qwen3vl_artefact_golden: GoldenRuns, qwen3vl_settings: Settings
) -> ArtefactCheck:
    """The current ``--qwen3vl-onnx`` file against golden: interface, weight type, tolerance (all read
    once, at start-up), and ``run(grid)`` / ``locate(grid)`` computed once per grid in this process."""
    from pytest_qwen3vl.judge.artefact import ArtefactCheck

    facts = next(f for f in qwen3vl_settings.onnx_files if f.path == qwen3vl_onnx_file)
    return ArtefactCheck(facts, qwen3vl_artefact_golden, dict(qwen3vl_settings.onnx_tolerance))
