"""Where the conformance suite and its snapshots are, and when a run collects the suite by itself.

In a source checkout they are the top-level ``conformance/`` and ``snapshots/``; the wheel
carries the same folders inside the package as ``_bundled/``, so a downstream repo runs the
installed suite without copying a test file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

AUTO = "auto"
ONLY = "only"
OFF = "off"
MODES = (AUTO, ONLY, OFF)


def suite_root() -> Path:
    """The folder that holds ``conformance/`` and ``snapshots/``."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_bundled"
    return packaged if (packaged / "conformance").is_dir() else package.parent


def conformance_dir() -> Path:
    return suite_root() / "conformance"


def snapshots_dir() -> Path:
    return suite_root() / "snapshots"


def add_suite(config: pytest.Config, mode: str, modified_named: bool) -> None:
    """Put the suite into the run's arguments where the mode asks for it.

    ``auto`` adds it when the run names a modified file and gives no test paths of its own
    (``pytest -n auto`` in a downstream repo); ``only`` runs the suite alone; ``off`` never adds it.
    Runs on the xdist controller before workers start, so workers inherit the arguments.
    """
    import pytest

    suite = conformance_dir()
    if mode == ONLY:
        config.args[:] = [str(suite)]
    elif mode == OFF or any(_covers(arg, suite) for arg in config.args):
        return
    elif mode == AUTO and modified_named and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args.append(str(suite))


def _covers(arg: str, suite: Path) -> bool:
    path = Path(arg.split("::")[0])
    try:
        return suite == path.resolve() or suite in path.resolve().parents or path.resolve() in suite.parents
    except OSError:
        return False
