"""Options and ini keys turned into one frozen ``Settings``, with one-line errors for bad input.

Nothing here imports torch or transformers: settings are parsed at pytest start-up, and a repo
that has the plugin installed but does not use it must not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_qwen3vl.errors import GridError, SettingsError
from pytest_qwen3vl.model.grids import DEFAULT_GRID, SWEEP, SWEEP_NAME, Grid
from pytest_qwen3vl.store.cache import LOCK_TIMEOUT as LOCK_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.onnxfile.interface import FileFacts, OutputMap
    from pytest_qwen3vl.runtimes.registry import RuntimeChoice

PREFIX = "qwen3vl"

# Option names as constants, one place for the CLI flag, the ini key and the help text.
GRID = "grid"
MODIFIED = "modified"
GOLDEN = "golden"
CONFIG = "config"
SEED = "seed"
CACHE_DIR = "cache_dir"
LOCK_TIMEOUT = "lock_timeout"
SUITE = "suite"
REPORT = "report"
RUN_SLOW = "run_slow"
SNAPSHOT_DIR = "snapshot_dir"
GENAI_FOLDER = "genai_folder"
ONNX = "onnx"
ONNX_OUTPUTS = "onnx_outputs"
ONNX_TOLERANCE = "onnx_tolerance"
RUNTIME = "runtime"
FLAGS = (RUN_SLOW,)
REPEATABLE = (GRID, ONNX, RUNTIME)


DEFAULT_CONFIG = "tiny"
DEFAULT_SEED = 0

OPTIONS: dict[str, str] = {
    GRID: "image grid T,H,W (several images: 1,24,24+1,20,20), or 'sweep' for the named set of grids; "
    "repeat the option for several grids "
    f"(default {DEFAULT_GRID.text})",
    MODIFIED: "the modified modeling_qwen3_vl.py to check (default: golden with the report's one change)",
    GOLDEN: "the golden modeling_qwen3_vl.py (default: the installed transformers' file; "
    "a named file must be a verified version's)",
    CONFIG: "model config: a preset (tiny, 2b, 4b, 8b: random weights), the checkpoint folder the file was exported "
    f"from (safetensors or pytorch_model.bin, sharded or not), or a bare config.json (default {DEFAULT_CONFIG})",
    SEED: f"seed of the random weights and inputs (default {DEFAULT_SEED})",
    CACHE_DIR: "where exports and the reference modified file are kept (default .pytest_cache/d/qwen3vl)",
    LOCK_TIMEOUT: "seconds to wait for another session making the same cache entry (an export, a genai folder) "
    "before the tests that need it are not run; the wait is said every 30 s (default 1800)",
    REPORT: "write the report again as Markdown to this path, from what the run measured",
    RUN_SLOW: "run the tests marked qwen3vl_slow (real-size models; minutes and ~10 GB each)",
    SNAPSHOT_DIR: "where graph-signature snapshots are read and written (default: the suite's snapshots/ folder)",
    GENAI_FOLDER: "your onnxruntime-genai model folder for the 'In the runtime' claims (default: one built from "
    "the config's checkpoint with the report's vision file); needs --qwen3vl-config=<its checkpoint folder>",
    ONNX: "your exported vision encoder (ONNX file; external data next to it) to judge against golden with the "
    "same weights on every grid; repeat for several files. Its tests carry the marker qwen3vl_artefact",
    ONNX_OUTPUTS: "name the outputs of --qwen3vl-onnx files whose names are not recognised: "
    "pooled=NAME[,deepstack=NAME,NAME...]",
    ONNX_TOLERANCE: "override the weight-type tolerance of --qwen3vl-onnx files: any of "
    "rel_l2=X,max_rel=X,cosine=X",
    RUNTIME: "runtime that --qwen3vl-onnx files (artefact-parity, artefact-grids), the grid-free recipes' files "
    "(grid-free-export, grid-free-dynamo) and the builder's exports (onnx-parity, dynamic-n) are judged on: "
    "onnxruntime, onnxruntime-optimized[:fp32|fp16] (the file as ONNX Runtime's transformer optimiser rewrites it), "
    "openvino[:f32|bf16|f16] (the CPU device at that inference precision), onnxruntime-cuda[:fp32|fp16], "
    "onnxruntime-tensorrt[:fp32|fp16] (with onnxruntime-gpu and a GPU), or onnxruntime-genai (the file as the "
    "session's genai folder's vision file); repeat for several (default onnxruntime)",
    SUITE: "collect the installed conformance suite: auto (when a modified file is named and no test paths "
    "are given), only, off (default auto)",
}


def flag(name: str) -> str:
    """The command-line flag for an option name: ``grid`` -> ``--qwen3vl-grid``."""
    return f"--{PREFIX}-{name.replace('_', '-')}"


def ini_key(name: str) -> str:
    """The ini key for an option name: ``grid`` -> ``qwen3vl_grid``."""
    return f"{PREFIX}_{name}"


@dataclass(frozen=True)
class Settings:
    """Everything a run was asked to do; fixtures read this and nothing else."""

    grids: tuple[Grid, ...]
    golden: Path | None
    modified: Path | None
    model: ModelSpec
    seed: int
    cache_dir: Path
    suite: str
    report: Path | None
    snapshot_dir: Path
    run_slow: bool
    explicit: bool
    genai_folder: Path | None = None
    onnx_files: tuple[FileFacts, ...] = ()  # each --qwen3vl-onnx file as read once, at start-up
    onnx_tolerance: tuple[tuple[str, float], ...] = ()
    runtimes: tuple[RuntimeChoice, ...] = ()  # what the files are judged on (parse_runtimes: at least one)
    cache_fallback: str | None = None  # why the named cache folder is not used (a private one is)
    spare_cache: Path | None = None  # the session's private cache, made when the cache refuses a write
    lock_timeout: float = LOCK_TIMEOUT_SECONDS  # how long to wait for another session's lock on an entry

    @property
    def onnx(self) -> tuple[Path, ...]:
        """The ``--qwen3vl-onnx`` files, in the order given."""
        return tuple(facts.path for facts in self.onnx_files)

    @property
    def export_cache(self) -> Path:
        """The content-addressed cache of ONNX files, shared by workers and runs."""
        return self.cache_dir / "exports"

    @property
    def eager_grids(self) -> tuple[Grid, ...]:
        """Grids of the eager claims: the sweep and the run's own, whatever ``--qwen3vl-grid`` says for exports."""
        merge = self.model.merge_size
        grids = dict.fromkeys(g for g in (*SWEEP, *self.grids) if all(h % merge == 0 == w % merge
                                                                       for _, h, w in g.images))
        return tuple(grids)

    @property
    def modified_label(self) -> str:
        """How the report header names the modified file."""
        return str(self.modified) if self.modified else "reference change (golden + the report's condition)"


SETTINGS_KEY = pytest.StashKey["Settings"]()


def settings_of(config: pytest.Config) -> Settings:
    """The run's settings, made once in ``pytest_configure``."""
    return config.stash[SETTINGS_KEY]


def parse_grids(values: list[str]) -> tuple[Grid, ...]:
    """Parse every ``--qwen3vl-grid``; duplicates collapse so test ids stay unique."""
    grids: list[Grid] = []
    for value in values:
        if value.strip().lower() == SWEEP_NAME:
            grids.extend(grid for grid in SWEEP if grid not in grids)
            continue
        try:
            grid = Grid.parse(value)
        except GridError as exc:
            raise SettingsError(f"{flag(GRID)}: {exc}") from None
        if grid not in grids:
            grids.append(grid)
    return tuple(grids)


def parse_runtimes(values: list[str]) -> tuple[RuntimeChoice, ...]:
    """Every ``--qwen3vl-runtime`` (default onnxruntime); an unknown name or setting is a usage error."""
    from pytest_qwen3vl.errors import ChoiceError
    from pytest_qwen3vl.runtimes.registry import DEFAULT_RUNTIME, parse_runtime

    try:
        return tuple(dict.fromkeys(parse_runtime(value) for value in values or [DEFAULT_RUNTIME]))
    except ChoiceError as exc:
        raise SettingsError(f"{flag(RUNTIME)}: {exc}") from None


def parse_lock_timeout(value: str | float) -> float:
    """Seconds, a positive finite number: a bound that is never reached would hang a session forever."""
    import math

    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise SettingsError(f"{flag(LOCK_TIMEOUT)}={value!r}: expected a positive number of seconds")
    return seconds


def parse_seed(value: str | int) -> int:
    """The seed: an integer from 0 to 2**32-1, the rule of every entry point (``model.inputs.check_seed``)."""
    from pytest_qwen3vl.model.inputs import check_seed

    try:
        return check_seed(value)
    except SettingsError as exc:
        raise SettingsError(f"{flag(SEED)}={exc}") from None


def existing_file(name: str, value: str | None, base: Path) -> Path | None:
    """Resolve a path option against its base and insist that the file exists."""
    return _existing(name, value, base, Path.is_file, "file")


def existing_folder(name: str, value: str | None, base: Path) -> Path | None:
    """Resolve a folder option against its base and insist that the folder exists."""
    return _existing(name, value, base, Path.is_dir, "folder")


def _existing(name: str, value: str | None, base: Path, exists: Callable[[Path], bool], kind: str) -> Path | None:
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    if not path.is_absolute():
        path = base / path
    if not exists(path):
        raise SettingsError(f"{flag(name)}: no such {kind}: {path}")
    return path.resolve()


# Where the controller hands the files it read to xdist workers (``config.workerinput``).
ONNX_WORKERINPUT = "qwen3vl_onnx_files"
# Where it hands them the cache folder it chose, with the reason when it is a private one.
CACHE_WORKERINPUT = "qwen3vl_cache"


def usable_cache(wanted: Path, handed: list[str | None] | None = None) -> tuple[Path, str | None, Path]:
    """The cache folder, why it is not ``wanted`` (or None), and the session's private spare cache.

    The cache is an optimisation, so a mistyped cache folder (a file, one that cannot be made) must
    never turn into a verdict: the session then uses the spare from the start. A folder that exists
    but refuses writes (a CI cache restored read-only, a full disk) is still read; what the session
    makes goes to the spare (``store.cache``). The spare is only named here, made by whichever
    process needs it first; an xdist worker takes the controller's choice (``handed``), so workers
    share it."""
    import contextlib
    import secrets
    import tempfile

    if handed is not None:
        return Path(str(handed[0])), handed[1], Path(str(handed[2]))
    spare = Path(tempfile.gettempdir()) / f"qwen3vl-cache-{secrets.token_hex(6)}"
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted, None, spare
    except OSError as exc:
        why = "a file, not a folder" if wanted.exists() and not wanted.is_dir() else exc.strerror or type(exc).__name__
    with contextlib.suppress(OSError):  # a full temporary folder too: the caches then say "not run"
        spare.mkdir()
    return spare, f"{wanted} is not usable ({why})", spare


def onnx_files(values: list[str], base: Path, mapping: OutputMap | None,
               handed: list[dict[str, Any]] | None = None) -> tuple[FileFacts, ...]:
    """Each ``--qwen3vl-onnx`` must exist, be an ONNX model and take pixel values: else a usage error.
    Each file is read once per run: an xdist worker takes what the controller read (``handed``)."""
    from pytest_qwen3vl.errors import ArtefactError
    from pytest_qwen3vl.onnxfile.interface import FileFacts, read_file

    if handed is not None:
        return tuple(FileFacts.from_dict(data) for data in handed)
    files: list[FileFacts] = []
    for value in values:
        path = existing_file(ONNX, value, base)
        if path is not None and path not in [facts.path for facts in files]:
            try:
                files.append(read_file(path, mapping))
            except ArtefactError as exc:
                raise SettingsError(f"{flag(ONNX)}={exc}") from None
    return tuple(files)


def _value(config: pytest.Config, name: str) -> tuple[Any, Path]:
    """An option's value and the folder a relative path in it is relative to: CLI wins over ini."""
    value = config.getoption(ini_key(name))
    if value is not None:
        return value, config.invocation_params.dir
    base = config.inipath.parent if config.inipath else config.rootpath
    return config.getini(ini_key(name)), base


def explicitly_set(config: pytest.Config) -> bool:
    """Whether the run names any qwen3vl option: only then is the golden file insisted upon."""
    for name in OPTIONS:
        if config.getoption(ini_key(name)) is not None:
            return True
        if config.getini(ini_key(name)) not in (None, "", []):
            return True
    return False


def _truthy(value: object) -> bool:
    """An ini bool arrives as text when an option's ini type is string; accept both."""
    return str(value).strip().lower() in ("1", "true", "yes", "on") if value is not None else False


def family_mismatch(model: ModelSpec, golden: Path | None, raw_config: object) -> None:
    """A checkpoint of another family than the modified file's (golden's) is a usage error."""
    from pytest_qwen3vl.model.configs import other_family

    why = other_family(model, golden, f"{flag(CONFIG)}={raw_config!r}", flag(MODIFIED)) if golden else None
    if why:
        raise SettingsError(why)


def settings_from_pytest(config: pytest.Config) -> Settings:
    """Read every option and ini key once; raise ``SettingsError`` with a one-line message."""
    from pytest_qwen3vl.errors import ConfigError, SourceError
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.plugin.bundled import AUTO, MODES, snapshots_dir
    from pytest_qwen3vl.source.files import default_golden

    raw_grids, _ = _value(config, GRID)
    grids = parse_grids(list(raw_grids or []) or [DEFAULT_GRID.text])
    raw_config, config_base = _value(config, CONFIG)
    try:
        model = resolve_config(str(raw_config or DEFAULT_CONFIG), config_base)
    except ConfigError as exc:
        raise SettingsError(f"{flag(CONFIG)}={raw_config!r}: {exc}") from None
    for grid in grids:
        try:
            grid.check_merge(model.merge_size)
            grid.check_memory(int(model.vision.get("num_heads", 16)))
        except GridError as exc:
            raise SettingsError(f"{flag(GRID)}={exc}") from None
    raw_seed, _ = _value(config, SEED)
    seed = parse_seed(raw_seed if raw_seed not in (None, "") else DEFAULT_SEED)
    golden = existing_file(GOLDEN, *_value(config, GOLDEN))
    modified = existing_file(MODIFIED, *_value(config, MODIFIED))
    if golden is None:
        try:
            golden = default_golden(modified)  # the installed file of the modified file's family
        except SourceError:
            golden = None
    family_mismatch(model, golden, raw_config)
    raw_cache, cache_base = _value(config, CACHE_DIR)
    wanted = (cache_base / str(raw_cache)).resolve() if raw_cache else config.rootpath / ".pytest_cache" / "d" / PREFIX
    cache_dir, cache_fallback, spare = usable_cache(wanted, getattr(config, "workerinput", {}).get(CACHE_WORKERINPUT))
    raw_timeout, _ = _value(config, LOCK_TIMEOUT)
    lock_timeout = parse_lock_timeout(raw_timeout) if raw_timeout not in (None, "") else LOCK_TIMEOUT_SECONDS
    raw_suite, _ = _value(config, SUITE)
    suite = str(raw_suite or AUTO).strip().lower()
    if suite not in MODES:
        raise SettingsError(f"{flag(SUITE)}={raw_suite!r}: expected one of {', '.join(MODES)}")
    from pytest_qwen3vl.judge.tolerance import parse_tolerance
    from pytest_qwen3vl.onnxfile.interface import OutputMap

    raw_outputs, _ = _value(config, ONNX_OUTPUTS)
    raw_tolerance, _ = _value(config, ONNX_TOLERANCE)
    try:
        mapping = OutputMap.parse(str(raw_outputs)) if raw_outputs else None
    except SettingsError as exc:
        raise SettingsError(f"{flag(ONNX_OUTPUTS)}={exc}") from None
    try:
        tolerance = parse_tolerance(str(raw_tolerance)) if raw_tolerance else {}
    except SettingsError as exc:
        raise SettingsError(f"{flag(ONNX_TOLERANCE)}={exc}") from None
    raw_onnx, onnx_base = _value(config, ONNX)
    raw_runtimes, _ = _value(config, RUNTIME)
    raw_report, report_base = _value(config, REPORT)
    report = (report_base / str(raw_report)).resolve() if raw_report else None
    if report is not None and report.is_dir():
        raise SettingsError(f"{flag(REPORT)}={raw_report!r}: {report} is a folder; name the Markdown file to write")
    raw_snapshots, snapshots_base = _value(config, SNAPSHOT_DIR)
    snapshots = (snapshots_base / str(raw_snapshots)).resolve() if raw_snapshots else snapshots_dir()
    if snapshots.exists() and not snapshots.is_dir():
        raise SettingsError(f"{flag(SNAPSHOT_DIR)}={raw_snapshots!r}: {snapshots} is a file, not a folder")
    return Settings(
        grids=grids,
        golden=golden,
        modified=modified,
        model=model,
        seed=seed,
        cache_dir=cache_dir,
        cache_fallback=cache_fallback,
        spare_cache=spare,
        lock_timeout=lock_timeout,
        suite=suite,
        report=report,
        snapshot_dir=snapshots,
        run_slow=_truthy(_value(config, RUN_SLOW)[0]),
        explicit=explicitly_set(config),
        genai_folder=existing_folder(GENAI_FOLDER, *_value(config, GENAI_FOLDER)),
        onnx_files=onnx_files(list(raw_onnx or []), onnx_base, mapping,
                              getattr(config, "workerinput", {}).get(ONNX_WORKERINPUT)),
        onnx_tolerance=tuple(tolerance.items()),
        runtimes=parse_runtimes(list(raw_runtimes or [])),
    )
