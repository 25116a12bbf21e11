"""How xdist workers share a run: tests that share heavy work on one worker, and a worker that
imported the models ends with one pass of the garbage collector.

A ``--qwen3vl-onnx`` file's tests share its heavy work (golden on every grid, the file's session, its
weights read in a child): split over two workers, each did it again, and a 4B file took 57.3 s with
``-n 2`` against 40.7 s with ``-n 0``. The genai claims share a whole model twice over (genai's
session and transformers' reference): at a real size two workers holding them do not fit. So, with
files to check or a config other than the tiny preset, xdist's default ``load`` distribution becomes
scope scheduling: one scope per file, one for the genai claims, every other test its own scope (as
under ``load``). A distribution the user chose (``loadscope``, ``loadfile``, ``loadgroup``,
``worksteal``) is left as it is. xdist's own ``xdist_group`` marks cannot do this under pytest 9:
xdist 3.8 appends the group to ``item._nodeid``, which pytest 9's ``nodeid`` no longer reads, so
every test stays its own group.

torch and transformers leave about a million objects that the cyclic garbage collector tracks. After
the last test, pytest's unconfigure collects twice and the interpreter's exit walks them again: a
second or more per worker on two shared cores, and the controller waits for every worker to exit.
Collecting once and then freezing what survives (``gc.freeze``) leaves one pass: what is garbage
is freed as before, what is left lives until the process ends anyway.
"""

from __future__ import annotations

import ast
import gc
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_qwen3vl.plugin.bundled import conformance_dir
from pytest_qwen3vl.plugin.claims import file_ids
from pytest_qwen3vl.runtimes.onnxruntime import BUSY_WORKERS

# Set when the session imports a modeling file (and with it torch and transformers).
MODELS_IMPORTED = pytest.StashKey[bool]()
SCOPED_WORKERINPUT = "qwen3vl_scoped"  # the controller tells its workers that the run is scheduled by scope
# Claim modules whose tests share a whole model per process (genai's session and transformers' reference).
WHOLE_MODEL_MODULES = ("test_genai.py",)


def file_of(nodeid: str, ids: Sequence[str]) -> str | None:
    """The ``--qwen3vl-onnx`` file id a test's parameters start with (the longest that fits), if any."""
    match = re.search(r"\[(.+)\]$", nodeid)
    if match is None:
        return None
    params = match.group(1)
    fitting = [i for i in ids if params == i or params.startswith(f"{i}-")]
    return max(fitting, key=len) if fitting else None


def whole_model_tests() -> frozenset[str]:
    """The test functions of ``WHOLE_MODEL_MODULES``, read from their source without importing them:
    a node id names its module only when the suite lies under the rootdir (the bundled one does not)."""
    names: set[str] = set()
    for module in WHOLE_MODEL_MODULES:
        tree = ast.parse((conformance_dir() / module).read_text(encoding="utf-8"))
        names.update(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))
    return frozenset(names)


def scope_of(nodeid: str, ids: Sequence[str], whole: frozenset[str]) -> str:
    """A test's scope: its ``--qwen3vl-onnx`` file, "whole model" for a test of ``whole``, or itself."""
    file = file_of(nodeid, ids)
    if file is not None:
        return f"--qwen3vl-onnx {file}"
    function = nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    return "whole model" if function in whole else nodeid


def scoped(config: pytest.Config, files: Sequence[Path], tiny: bool) -> bool:
    """Whether the run is scheduled by ``scope_of``: xdist's default ``load`` distribution, with files
    to check or a config other than the tiny preset."""
    return (bool(files) or not tiny) and config.getoption("dist", "no") == "load"


def shared_work_scheduler(config: pytest.Config, files: Sequence[Path], tiny: bool, log: Any) -> Any:
    """xdist's scope scheduling by ``scope_of`` where ``scoped``; else None (xdist's own)."""
    if not scoped(config, files, tiny):
        return None
    from xdist.scheduler import LoadScopeScheduling

    ids, whole = file_ids(files), whole_model_tests()

    class SharedWorkScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, ids, whole)

    return SharedWorkScheduling(config, log)


def share_idle_cores(items: Sequence[pytest.Item], files: Sequence[Path]) -> None:
    """In a worker of a scoped run: with fewer scopes than workers, some workers get nothing, so each
    busy one takes their cores (``BUSY_WORKERS`` for ``default_threads``). One 4B file's check on one
    worker of ``-n 2`` ran at one thread: 80.3 s against 64.7 s with ``-n 0``."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    ids, whole = file_ids(files), whole_model_tests()
    scopes = {scope_of(item.nodeid, ids, whole) for item in items}
    os.environ[BUSY_WORKERS] = str(max(1, min(workers, len(scopes))))
def settle_before_exit(config: pytest.Config) -> None:
    """In an xdist worker whose session imported the models: collect once, then freeze the survivors.

    Only in a worker, whose process ends with its session: an in-process run (pytester) shares its
    process with the caller, whose later garbage must stay collectable.
    """
    if hasattr(config, "workerinput") and config.stash.get(MODELS_IMPORTED, False):
        gc.collect()
        gc.freeze()
