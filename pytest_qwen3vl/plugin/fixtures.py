"""The plugin's fixtures: each turns settings into a call of the module that does the work.

Session scope for everything expensive: both models are built once per session (per xdist
worker) and every test reads them. Tests must not change a model persistently; helpers that
set a flag or an attention implementation restore it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar, cast

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
    from pytest_qwen3vl.judge.pipeline_cost import WholeModel
    from pytest_qwen3vl.model.build import VisionPair
    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.model.eager import EagerRuns
    from pytest_qwen3vl.model.inputs import VisionInputs
    from pytest_qwen3vl.plugin.exports import SessionExports
    from pytest_qwen3vl.plugin.genai import SessionGenai
    from pytest_qwen3vl.runtimes.base import Runtime
    from pytest_qwen3vl.runtimes.registry import RuntimeChoice
    from pytest_qwen3vl.store.cache import Fallbacks

T = TypeVar("T")


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


class ModifiedSide:
    """The modified file, checked, imported and built on first use, with golden's weights.

    Golden's claims never ask for it, so a modified file that is of another version or does not
    import fails only the claims that need it, each with the same one line.
    """

    def __init__(self, config: pytest.Config, settings: Settings, golden: sources.GoldenFile) -> None:
        self._config = config
        self._settings = settings
        self._golden = golden
        self._made: dict[str, object] = {}
        self._problems: dict[str, str] = {}  # per step (path, module, pair): why it cannot be made

    def _fail_if(self, step: str) -> None:
        if step in self._problems:
            pytest.fail(self._problems[step], pytrace=False)

    def path(self) -> Path:
        """The user's modified file, or the reference change written to the cache. A fork made from
        another transformers version than golden's fails here: every comparison with golden would
        otherwise list the versions' differences as its changes."""
        self._fail_if("path")
        settings, golden = self._settings, self._golden
        if settings.modified is None:
            return _reference_modified(self._config, settings, golden.path)
        mismatch = fork_mismatch(settings.modified, golden.path, golden.version, golden.family)
        if mismatch:
            self._problems["path"] = f"{settings.modified}: {mismatch}"
            self._fail_if("path")
        return settings.modified

    def module(self) -> ModuleType:
        """The modified file imported inside its family's package; relative imports resolve."""
        path = self.path()
        self._fail_if("module")
        if "module" not in self._made:
            self._config.stash[MODELS_IMPORTED] = True
            try:
                self._made["module"] = sources.import_modeling_file(path, "modified")
            except SourceError as exc:
                self._problems["module"] = f"the modified file does not import ({exc})"
                self._fail_if("module")
        return cast(ModuleType, self._made["module"])

    def pair(self, golden: torch.nn.Module, spec: ModelSpec) -> VisionPair:
        """The modified vision model beside ``golden``, sharing its parameters and persistent buffers."""
        from pytest_qwen3vl.model.build import pair_with

        module = self.module()
        self._fail_if("pair")
        if "pair" not in self._made:
            try:
                self._made["pair"] = pair_with(golden, module, spec)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                self._problems["pair"] = f"cannot build the modified vision model of {spec.name}: {problem}"
                self._fail_if("pair")
        return cast("VisionPair", self._made["pair"])


class Roles(Mapping[str, T]):
    """``{"golden": ..., "modified": ...}`` whose modified value is made on first use."""

    def __init__(self, golden: T, modified: Callable[[], T]) -> None:
        self._golden = golden
        self._modified = modified

    def __getitem__(self, role: str) -> T:
        if role == "golden":
            return self._golden
        if role == "modified":
            return self._modified()
        raise KeyError(role)

    def __contains__(self, role: object) -> bool:
        return role in ("golden", "modified")

    def __iter__(self) -> Iterator[str]:
        return iter(("golden", "modified"))

    def __len__(self) -> int:
        return 2


@pytest.fixture(scope="session")
def qwen3vl_modified_side(
    pytestconfig: pytest.Config, qwen3vl_settings: Settings, qwen3vl_golden: sources.GoldenFile
) -> ModifiedSide:
    """The modified file made on first use: ``.path()``, ``.module()``, ``.pair(golden, spec)``."""
    return ModifiedSide(pytestconfig, qwen3vl_settings, qwen3vl_golden)


@pytest.fixture(scope="session")
def qwen3vl_modified_path(qwen3vl_modified_side: ModifiedSide) -> Path:
    """The user's modified file, or the reference change written to the cache; a fork made from another
    known transformers version than golden's fails here in one line."""
    return qwen3vl_modified_side.path()


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


@pytest.fixture(scope="session")
def qwen3vl_golden_module(pytestconfig: pytest.Config, qwen3vl_golden_path: Path) -> ModuleType:
    """The golden file imported inside its family's package (``transformers.models.qwen3_vl``)."""
    pytestconfig.stash[MODELS_IMPORTED] = True
    try:
        return sources.import_modeling_file(qwen3vl_golden_path, "golden")
    except SourceError as exc:
        problem = str(exc)
    pytest.fail(f"golden modeling file does not import: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_modified_module(qwen3vl_modified_side: ModifiedSide) -> ModuleType:
    """The modified file imported inside its family's package; relative imports resolve."""
    return qwen3vl_modified_side.module()


@pytest.fixture(scope="session")
def qwen3vl_golden_vision(
    qwen3vl_golden_module: ModuleType, qwen3vl_config: ModelSpec, qwen3vl_settings: Settings
) -> torch.nn.Module:
    """Golden ``Qwen3VLVisionModel``: eval, float32, CPU, seeded random weights (or the checkpoint's)."""
    import torch

    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.runtimes.onnxruntime import default_threads

    # xdist workers share the cores: without this each takes all of them and they thrash.
    torch.set_num_threads(default_threads())
    try:
        return build_golden(qwen3vl_golden_module, qwen3vl_config, qwen3vl_settings.seed)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"cannot build the golden vision model of {qwen3vl_config.name}: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def qwen3vl_vision_pair(
    qwen3vl_golden_vision: torch.nn.Module, qwen3vl_modified_side: ModifiedSide, qwen3vl_config: ModelSpec
) -> VisionPair:
    """Golden and modified vision models sharing parameters and persistent buffers."""
    return qwen3vl_modified_side.pair(qwen3vl_golden_vision, qwen3vl_config)


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
    qwen3vl_golden_vision: torch.nn.Module,
    qwen3vl_modified_side: ModifiedSide,
    qwen3vl_config: ModelSpec,
    qwen3vl_eager_inputs: tuple[VisionInputs, ...],
) -> EagerRuns:
    """``qwen3vl_eager_runs(which, grid) -> EagerRun``: the "golden" or "modified" model's forward on an
    eager grid, flag unset (``.outputs``, and ``.calls`` of the first block's attention), run once per
    process for every claim that reads it."""
    from pytest_qwen3vl.model.eager import EagerRuns

    golden = qwen3vl_golden_vision
    models = Roles(golden, lambda: qwen3vl_modified_side.pair(golden, qwen3vl_config).modified)
    return EagerRuns(models, qwen3vl_eager_inputs)


@pytest.fixture
def qwen3vl_record(request: pytest.FixtureRequest) -> ClaimRecorder:
    """Record what the test measured for the claim(s) of its ``qwen3vl_claim`` marker."""
    return ClaimRecorder(request.node)


@pytest.fixture(scope="session")
def qwen3vl_export(
    pytestconfig: pytest.Config,
    qwen3vl_golden_vision: torch.nn.Module,
    qwen3vl_modified_side: ModifiedSide,
    qwen3vl_golden_path: Path,
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
    ``qwen3vl_export.session(path)`` is an ONNX Runtime session per file; ``.sweep(path, runtime=None)``
    what the file serves on the sweep against golden (on ONNX Runtime unless a runtime is given),
    ``.signature(path)`` and ``.digest(path)`` its graph signature and digest (each measured once per
    file content and kept in the cache);
    ``.deepstack_calls(which, grid, trace=..., flag=...)`` and ``.trace_hazards(which, grid)`` what
    running or tracing a model does (measured once per model and grid, and kept); ``.builds`` the
    exports this process ran (``<cache dir>/exports/builds.log`` has every worker's).
    """
    from pytest_qwen3vl.plugin.exports import TALLY_KEY, SessionExports

    golden, side = qwen3vl_golden_vision, qwen3vl_modified_side
    return SessionExports(
        Roles(golden, lambda: side.pair(golden, qwen3vl_config).modified),
        Roles(qwen3vl_golden_path, side.path),
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

    genai = _session_genai(pytestconfig, qwen3vl_settings, qwen3vl_golden_path)
    try:
        genai.check_runnable()
    except NotRunnable as exc:
        pytest.skip(str(exc))
    return genai


_GENAI_KEY = pytest.StashKey["SessionGenai"]()


def _session_genai(config: pytest.Config, settings: Settings, golden: Path) -> SessionGenai:
    """The session's genai folder and references, one per process for the genai claims and the genai
    runtime alike (nothing is made until asked)."""
    from pytest_qwen3vl.plugin.exports import TALLY_KEY
    from pytest_qwen3vl.plugin.genai import SessionGenai

    if _GENAI_KEY not in config.stash:
        config.stash[_GENAI_KEY] = SessionGenai(settings, golden, on_event=config.stash[TALLY_KEY].add,
                                                fallbacks=_fallbacks(config, settings))
    return config.stash[_GENAI_KEY]


GATE_ROLES = ("golden", "modified", "reference")


@pytest.fixture(scope="session")
def qwen3vl_gate(
    pytestconfig: pytest.Config,
    qwen3vl_settings: Settings,
    qwen3vl_golden_path: Path,
    qwen3vl_golden_module: ModuleType,
    qwen3vl_modified_side: ModifiedSide,
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
            modified = which == "modified"
            path = qwen3vl_modified_side.path() if modified else qwen3vl_golden_path
            module = qwen3vl_modified_side.module() if modified else qwen3vl_golden_module
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
def qwen3vl_whole_model(
    pytestconfig: pytest.Config, qwen3vl_golden_module: ModuleType, qwen3vl_artefact_golden: GoldenRuns,
    qwen3vl_settings: Settings,
) -> WholeModel:
    """Golden's whole model around ``qwen3vl_artefact_golden``'s tower, for what a file's features cost
    the next token; built on first use, where a language model is at hand and fits. Measured costs are
    kept under ``<cache dir>/measured``: other workers and later runs read them."""
    from pytest_qwen3vl.judge.pipeline_cost import WholeModel
    from pytest_qwen3vl.store.cache import ArtifactCache

    store = ArtifactCache(qwen3vl_settings.cache_dir / "measured",
                          fallbacks=_fallbacks(pytestconfig, qwen3vl_settings).under("measured"))
    return WholeModel(qwen3vl_golden_module, qwen3vl_artefact_golden, store)


@pytest.fixture(scope="session")
def qwen3vl_runtime(qwen3vl_settings: Settings) -> RuntimeChoice:
    """The ``--qwen3vl-runtime`` of the current test. The plugin parametrizes it once per runtime
    (``pytest_generate_tests``), which replaces this body."""
    return qwen3vl_settings.runtimes[0]


Runtimes = Callable[["RuntimeChoice"], "Runtime"]
ArtefactChecks = Callable[[Path, "RuntimeChoice"], "ArtefactCheck"]


@pytest.fixture(scope="session")
def qwen3vl_runtimes(pytestconfig: pytest.Config, qwen3vl_settings: Settings, qwen3vl_golden_path: Path) -> Runtimes:
    """``qwen3vl_runtimes(choice) -> Runtime``, built once per process; skips ("not run: pip install ...")
    when the runtime is not installed, or when the installed onnxruntime lacks its GPU provider. Rewrites a
    runtime makes are kept under ``<cache dir>/runtimes``; onnxruntime-genai loads files into the session's
    genai folder (the one the "In the runtime" claims use), made when it first loads one."""
    from pytest_qwen3vl.runtimes.genai import GENAI_RUNTIME

    made: dict[RuntimeChoice, Runtime] = {}

    def runtime(choice: RuntimeChoice) -> Runtime:
        missing = choice.missing()
        if missing:
            pytest.skip(f"not run: {missing}")
        if choice not in made:
            genai = (_session_genai(pytestconfig, qwen3vl_settings, qwen3vl_golden_path).runtime_folder
                     if choice.name == GENAI_RUNTIME else None)
            made[choice] = choice.make(qwen3vl_settings.cache_dir / "runtimes", genai_folder=genai)
        return made[choice]

    return runtime


@pytest.fixture(scope="session")
def qwen3vl_artefact_checks(
    qwen3vl_artefact_golden: GoldenRuns, qwen3vl_settings: Settings, qwen3vl_runtimes: Runtimes
) -> ArtefactChecks:
    """``checks(file, runtime) -> ArtefactCheck``. Each runtime keeps the check of one file: pytest runs a
    session-parametrized file's tests together, so a process holds one session per runtime."""
    from pytest_qwen3vl.judge.artefact import ArtefactCheck
    from pytest_qwen3vl.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice

    current: dict[RuntimeChoice, ArtefactCheck] = {}
    reference_choice = RuntimeChoice(DEFAULT_RUNTIME)

    def check(path: Path, choice: RuntimeChoice) -> ArtefactCheck:
        runtime = qwen3vl_runtimes(choice)
        if choice not in current or current[choice].path != path:
            current.pop(choice, None)  # its session goes before the next file's loads
            facts = next(f for f in qwen3vl_settings.onnx_files if f.path == path)
            reference = None if choice == reference_choice else check(path, reference_choice)
            current[choice] = ArtefactCheck(facts, qwen3vl_artefact_golden, dict(qwen3vl_settings.onnx_tolerance),
                                            runtime, reference)
        return current[choice]

    return check


@pytest.fixture(scope="session")
def qwen3vl_artefact(qwen3vl_onnx_file: Path, qwen3vl_artefact_checks: ArtefactChecks) -> ArtefactCheck:
    """The current ``--qwen3vl-onnx`` file against golden on ONNX Runtime, the reference runtime:
    interface, weight type, tolerance (all read once, at start-up), and ``run(grid)`` / ``locate(grid)``
    computed once per grid in this process."""
    from pytest_qwen3vl.runtimes.registry import DEFAULT_RUNTIME, RuntimeChoice

    return qwen3vl_artefact_checks(qwen3vl_onnx_file, RuntimeChoice(DEFAULT_RUNTIME))


@pytest.fixture(scope="session")
def qwen3vl_artefact_on_runtime(
    qwen3vl_onnx_file: Path, qwen3vl_runtime: RuntimeChoice, qwen3vl_artefact_checks: ArtefactChecks
) -> ArtefactCheck:
    """The current ``--qwen3vl-onnx`` file against golden on the current ``--qwen3vl-runtime``, at the
    tolerance of the precision that runs there (``ArtefactCheck.runtime.label`` names it)."""
    return qwen3vl_artefact_checks(qwen3vl_onnx_file, qwen3vl_runtime)
