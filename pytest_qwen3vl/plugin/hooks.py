"""pytest hooks of pytest-qwen3vl: options, markers, settings, grid parametrization, claims table.

Thin on purpose: every hook hands its work to a module below. Nothing heavy is imported here,
so a repo that has the plugin installed but does not use it pays nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_qwen3vl.errors import NotRunnable, SettingsError, SourceError, UnknownClaim
from pytest_qwen3vl.plugin.bundled import add_suite
from pytest_qwen3vl.plugin.claims import (
    IDS_PROPERTY,
    claim_ids,
    file_ids,
)
from pytest_qwen3vl.plugin.exports import FAULTS_OUTPUT, TALLY_KEY, WORKER_OUTPUT
from pytest_qwen3vl.plugin.settings import (
    CACHE_WORKERINPUT,
    DEFAULT_CONFIG,
    FLAGS,
    GRID,
    ONNX,
    ONNX_WORKERINPUT,
    OPTIONS,
    REPEATABLE,
    RUN_SLOW,
    RUNTIME,
    SETTINGS_KEY,
    flag,
    ini_key,
    settings_from_pytest,
    settings_of,
)
from pytest_qwen3vl.plugin.summary import REPORTER_NAME, ClaimReporter
from pytest_qwen3vl.plugin.worker import (
    SCOPED_WORKERINPUT,
    scoped,
    settle_before_exit,
    share_idle_cores,
    shared_work_scheduler,
)
from pytest_qwen3vl.source import files as sources
from pytest_qwen3vl.store.cache import CacheTally

# The fixtures live in their own module; pytest registers it with this plugin.
pytest_plugins = ["pytest_qwen3vl.plugin.fixtures"]


MARKERS = (
    "qwen3vl_claim(id): ties a test to a claim of the report; see docs/claims.md for the ids",
    "qwen3vl_export: the test needs an ONNX export",
    "qwen3vl_slow: the test builds a real-size model",
    "qwen3vl_genai: the test runs onnxruntime-genai (pip install pytest-qwen3vl[genai])",
    "qwen3vl_artefact: the test judges a --qwen3vl-onnx file (deselected when none is given)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qwen3vl", "Qwen3-VL export conformance")
    for name, help_text in OPTIONS.items():
        if name in FLAGS:
            group.addoption(flag(name), dest=ini_key(name), action="store_true", default=None, help=help_text)
            parser.addini(ini_key(name), help_text, type="bool", default=None)
            continue
        group.addoption(
            flag(name), dest=ini_key(name), action="append" if name in REPEATABLE else "store", default=None,
            metavar={GRID: "T,H,W", ONNX: "PATH", RUNTIME: "NAME[:SETTING]"}.get(name, "VALUE"), help=help_text,
        )
        if name in REPEATABLE:
            parser.addini(ini_key(name), help_text, type="args", default=None)
        else:
            parser.addini(ini_key(name), help_text, type="string", default=None)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        settings = settings_from_pytest(config)
        if settings.explicit:
            if settings.golden is None:
                sources.installed_golden_path()  # raises why: no transformers, or one without Qwen3-VL
                raise SettingsError(sources.TRANSFORMERS_MISSING)
            golden = sources.check_golden(settings.golden)
            if settings.modified is not None and sources.file_family(settings.modified) != golden.family:
                family = sources.file_family(settings.modified)
                raise SourceError(
                    f"{settings.modified} is a {family.name} file and golden {settings.golden} a {golden.family.name} "
                    f"one: name transformers' {family.relative_path} as the golden file, or leave it to the default"
                )
    except (SettingsError, SourceError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = settings
    config.stash[TALLY_KEY] = CacheTally()
    add_suite(config, settings.suite, modified_named=settings.modified is not None)
    config.pluginmanager.register(ClaimReporter(config, settings), REPORTER_NAME)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: hand each worker the ``--qwen3vl-onnx`` files it read, so no worker reads them again."""
    settings = settings_of(node.config)  # type: ignore[attr-defined]
    node.workerinput[ONNX_WORKERINPUT] = [facts.to_dict() for facts in settings.onnx_files]  # type: ignore[attr-defined]
    node.workerinput[CACHE_WORKERINPUT] = [  # type: ignore[attr-defined]
        str(settings.cache_dir), settings.cache_fallback, str(settings.spare_cache)]
    node.workerinput[SCOPED_WORKERINPUT] = scoped(  # type: ignore[attr-defined]
        node.config, settings.onnx, settings.model.name == DEFAULT_CONFIG)  # type: ignore[attr-defined]


def pytest_collection_finish(session: pytest.Session) -> None:
    """xdist worker of a run scheduled by scope: the cores of workers that get no work are shared."""
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None and workerinput.get(SCOPED_WORKERINPUT):
        share_idle_cores(session.items, settings_of(session.config).onnx)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist controller: tests that share heavy work on one worker (``plugin/worker.py``)."""
    settings = settings_of(config)
    return shared_work_scheduler(config, settings.onnx, settings.model.name == DEFAULT_CONFIG, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist worker: hand this process's cache events to the controller, and settle before exiting."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and TALLY_KEY in session.config.stash:
        tally = session.config.stash[TALLY_KEY]
        output[WORKER_OUTPUT] = dict(tally.events)
        output[FAULTS_OUTPUT] = dict(tally.faults)
    settle_before_exit(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller removes the session's private cache, if any process made it (workers share it until then)."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None and settings.spare_cache is not None and not hasattr(config, "workerinput"):
        import shutil

        shutil.rmtree(settings.spare_cache, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None]:
    """What cannot run here (``NotRunnable``: a cache that takes no write, a lock held too long) is
    "not run" with its reason, wherever it is found: in a fixture or in the test."""
    try:
        return (yield)
    except NotRunnable as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """As ``pytest_runtest_setup``: a ``NotRunnable`` raised by the test is "not run", never a failure."""
    try:
        return (yield)
    except NotRunnable as exc:
        pytest.skip(str(exc))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    from pytest_qwen3vl.model.configs import weights_origin

    settings = settings_of(config)
    if not settings.explicit:
        return None
    # A preset's weights are always seeded; where a folder or config.json was named, say whose they are.
    weights = f"weights: {weights_origin(settings.model, settings.seed)}; " if settings.model.source else ""
    return [
        f"qwen3vl golden: {sources.golden_label(settings.golden)} {settings.golden}",
        f"qwen3vl modified: {settings.modified_label}",
        f"qwen3vl config: {settings.model.name}; {weights}grids: {', '.join(g.id for g in settings.grids)}; "
        f"seed: {settings.seed}",
        *(f"qwen3vl onnx: {path}" for path in settings.onnx),
        *([f"qwen3vl runtimes: {', '.join(r.text for r in settings.runtimes)}"] if settings.onnx else []),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qwen3vl_onnx_file" in metafunc.fixturenames:
        files = settings_of(metafunc.config).onnx
        metafunc.parametrize("qwen3vl_onnx_file", files, ids=file_ids(files), scope="session")
    if "qwen3vl_runtime" in metafunc.fixturenames:
        runtimes = settings_of(metafunc.config).runtimes
        metafunc.parametrize("qwen3vl_runtime", runtimes, ids=[r.text for r in runtimes], scope="session")
    if "qwen3vl_grid" in metafunc.fixturenames:
        grids = settings_of(metafunc.config).grids
        metafunc.parametrize("qwen3vl_grid", grids, ids=[g.id for g in grids], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = settings_of(config)
    if not settings.onnx:
        unasked = [item for item in items if item.get_closest_marker("qwen3vl_artefact")]
        if unasked:
            config.hook.pytest_deselected(items=unasked)
            items[:] = [item for item in items if not item.get_closest_marker("qwen3vl_artefact")]
    run_slow = settings.run_slow
    for item in items:
        if not run_slow and item.get_closest_marker("qwen3vl_slow"):
            item.add_marker(pytest.mark.skip(reason=f"real-size model: run with {flag(RUN_SLOW)}"))
        try:
            ids = claim_ids(item)
        except UnknownClaim as exc:
            raise pytest.UsageError(str(exc)) from None
        if ids:
            item.user_properties.append((IDS_PROPERTY, ids))
