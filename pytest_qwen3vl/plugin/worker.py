"""How xdist workers share a run: each ``--qwen3vl-onnx`` file's tests on one worker, and a worker
that imported the models ends with one pass of the garbage collector.

A file's tests share its heavy work (golden on every grid, the file's session, its weights read in
a child): split over two workers, each did it again, and a 4B file took 57.3 s with ``-n 2`` against
40.7 s with ``-n 0``. Under xdist's default ``load`` distribution the run is scheduled by scope
instead, one scope per file (every other test its own scope, as under ``load``). A distribution the
user chose (``loadscope``, ``loadfile``, ``loadgroup``, ``worksteal``) is left as it is. xdist's own
``xdist_group`` marks cannot do this under pytest 9: xdist 3.8 appends the group to ``item._nodeid``,
which pytest 9's ``nodeid`` no longer reads, so every test stays its own group.

torch and transformers leave about a million objects that the cyclic garbage collector tracks. After
the last test, pytest's unconfigure collects twice and the interpreter's exit walks them again: a
second or more per worker on two shared cores, and the controller waits for every worker to exit.
Collecting once and then freezing what survives (``gc.freeze``) leaves one pass: what is garbage
is freed as before, what is left lives until the process ends anyway.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_qwen3vl.plugin.claims import file_ids

# Set when the session imports a modeling file (and with it torch and transformers).
MODELS_IMPORTED = pytest.StashKey[bool]()


def file_of(nodeid: str, ids: Sequence[str]) -> str | None:
    """The ``--qwen3vl-onnx`` file id a test's parameters start with (the longest that fits), if any."""
    match = re.search(r"\[(.+)\]$", nodeid)
    if match is None:
        return None
    params = match.group(1)
    fitting = [i for i in ids if params == i or params.startswith(f"{i}-")]
    return max(fitting, key=len) if fitting else None


def file_scheduler(config: pytest.Config, files: Sequence[Path], log: Any) -> Any:
    """xdist's scope scheduling with one scope per file, for a ``load`` run with files; else None."""
    if not files or config.getoption("dist", "no") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    ids = file_ids(files)

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return file_of(nodeid, ids) or nodeid

    return FileScheduling(config, log)


def settle_before_exit(config: pytest.Config) -> None:
    """In an xdist worker whose session imported the models: collect once, then freeze the survivors.

    Only in a worker, whose process ends with its session: an in-process run (pytester) shares its
    process with the caller, whose later garbage must stay collectable.
    """
    if hasattr(config, "workerinput") and config.stash.get(MODELS_IMPORTED, False):
        gc.collect()
        gc.freeze()
