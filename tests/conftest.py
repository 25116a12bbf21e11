"""Shared fixtures of the plugin's own tests: an in-process pytest run of the conformance suite."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

# Imported here, before any in-process run: pytester restores sys.modules after each inner run,
# and torch, onnxruntime and onnxscript's native parts abort the process when imported twice.
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import onnxscript  # noqa: F401
import pytest
import torch
import transformers.models.qwen3_vl.modeling_qwen3_vl  # noqa: F401

from pytest_qwen3vl.export.builder import quiet_logging

# openvino's native part likewise (an optional runtime: its self-tests skip where it is absent).
with contextlib.suppress(ImportError):
    import openvino  # noqa: F401
from pytest_qwen3vl.model.build import VisionPair, build_pair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path, write_reference_modified


def _load_the_dynamo_exporter() -> None:
    """One tiny dynamo export, so torch.export and its registries are loaded before any inner run:
    an inner run that loaded them first would drop them, and the next attempt fails to re-register."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), quiet_logging():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.nn.Linear(2, 2), (torch.zeros(1, 2),), f"{folder}/warm.onnx", dynamo=True, verbose=False
        )


def _load_torch_compile() -> None:
    """One tiny torch.compile, for the same reason: an inner run that loaded dynamo's backends first
    would drop them, and the next registers ``eager`` twice (AssertionError: duplicate name)."""
    torch.compile(torch.nn.Linear(2, 2), backend="eager", fullgraph=True)(torch.zeros(1, 2))


_load_the_dynamo_exporter()
_load_torch_compile()

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO / "conformance"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One qwen3vl cache for every inner run of this session, so exports are made once."""
    return tmp_path_factory.mktemp("qwen3vl-cache")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> VisionPair:
    """Tiny golden and reference-modified models, seed 0, fresh for each test module."""
    golden = installed_golden_path()
    modified = write_reference_modified(golden, tmp_path_factory.mktemp("sources"))
    spec = resolve_config("tiny", golden.parent)
    return build_pair(import_modeling_file(golden, "golden"), import_modeling_file(modified, "modified"), spec, 0)


RunSuite = Callable[..., pytest.RunResult]


@pytest.fixture
def run_suite(pytester: pytest.Pytester, shared_cache: Path) -> RunSuite:
    """Run conformance modules in-process against a modified file, isolated from the repo's ini.

    ``run_suite("test_runtime.py", "-k", "bit_identical", modified=path)``: names are taken
    relative to ``conformance/``; extra arguments go to pytest as they are; ``cache`` replaces the
    session's shared cache folder.
    """
    ini = pytester.makeini("[pytest]\n")

    def run(
        *args: str, modified: Path | None = None, subprocess: bool = False, cache: Path | None = None
    ) -> pytest.RunResult:
        argv = [str(CONFORMANCE / a) if (CONFORMANCE / a.split("::")[0]).exists() else a for a in args]
        # hypothesis' plugin (where installed) re-imports itself in every inner run: seconds each.
        argv += ["-c", str(ini), "--rootdir", str(pytester.path), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                 f"--qwen3vl-cache-dir={cache or shared_cache}"]
        if modified is not None:
            argv.append(f"--qwen3vl-modified={modified}")
        return pytester.runpytest_subprocess(*argv) if subprocess else pytester.runpytest(*argv)

    return run
