"""How an xdist worker that imported the models ends: with one pass of the garbage collector.

torch and transformers leave about a million objects that the cyclic garbage collector tracks. After
the last test, pytest's unconfigure collects twice and the interpreter's exit walks them again: a
second or more per worker on two shared cores, and the controller waits for every worker to exit.
Collecting once and then freezing what survives (``gc.freeze``) leaves one pass: what is garbage
is freed as before, what is left lives until the process ends anyway.
"""

from __future__ import annotations

import gc

import pytest

# Set when the session imports a modeling file (and with it torch and transformers).
MODELS_IMPORTED = pytest.StashKey[bool]()


def settle_before_exit(config: pytest.Config) -> None:
    """In an xdist worker whose session imported the models: collect once, then freeze the survivors.

    Only in a worker, whose process ends with its session: an in-process run (pytester) shares its
    process with the caller, whose later garbage must stay collectable.
    """
    if hasattr(config, "workerinput") and config.stash.get(MODELS_IMPORTED, False):
        gc.collect()
        gc.freeze()
