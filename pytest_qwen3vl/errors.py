"""Every exception the plugin raises on purpose, under one base class.

Each carries a one-line message meant for a user: the plugin turns settings and source errors into
pytest usage errors (exit 4) and the console scripts into exit code 2, without a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# A Python traceback's last line (``ValueError: ...``, ``onnx.onnx_cpp2py_export.checker.ValidationError: ...``).
_EXCEPTION_LINE = re.compile(r"^[\w.]*(?:Error|Exception|Exit|Interrupt)\b.*")


class Qwen3VLError(Exception):
    """Base of every pytest-qwen3vl error: catch this to catch them all."""


class SettingsError(Qwen3VLError, ValueError):
    """A bad option value; the plugin turns it into a pytest usage error (exit code 4)."""


class GridError(SettingsError):
    """A grid that is not T,H,W triples of positive integers, or not divisible by the merge size."""


class ConfigError(SettingsError):
    """A config name, file or checkpoint folder that cannot be used."""


class ArtefactError(SettingsError):
    """A file given to ``--qwen3vl-onnx`` that cannot be checked at all: missing, not ONNX, no pixel input."""


class SourceError(Qwen3VLError):
    """A modeling file that cannot be used: the message is one line naming the file."""


class UndecidableCondition(Qwen3VLError, ValueError):
    """The DeepStack condition reads something other than the three inputs, so no truth table exists."""


class UnknownClaim(Qwen3VLError, ValueError):
    """A ``qwen3vl_claim`` marker naming no claim of the catalogue."""


class ChoiceError(Qwen3VLError, ValueError):
    """A value that is none of the names a function takes (a recipe, wrapper, exporter, layout)."""


def choose(what: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``ChoiceError`` naming them."""
    if value not in allowed:
        raise ChoiceError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class ExportFailed(Qwen3VLError, RuntimeError):
    """An export that raised. ``summary`` is one line: the root exception's class, its first line
    and, where it can be found, the model function that raised it; ``details`` keeps the full text.
    """

    # The failure is a fact about the export's inputs, so the artefact cache may remember it.
    remember = True

    def __init__(self, exporter: str, summary: str, details: str = "") -> None:
        super().__init__(f"{exporter} export failed: {summary}")
        self.exporter = exporter
        self.summary = summary
        self.details = details


class RecipeUnsupported(ExportFailed):
    """A model the grid-free replacements do not know how to make grid-free: nothing about its file is
    learnt, so a claim that needs the recipe reports "not run" with this one line."""

    remember = False

    def __init__(self, summary: str) -> None:
        super().__init__("grid-free", summary)


class ExporterUnavailable(ExportFailed):
    """The exporter cannot run on this machine (a missing package): nothing is learnt about the model."""

    remember = False  # installing the package changes no key part, so this must not be remembered


class RuntimeRefused(Qwen3VLError):
    """A runtime's own error loading or running a file: a finding about the file on that runtime.
    ``node`` is the (op type, node name) it failed at, where the runtime says."""

    def __init__(self, message: str, node: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.node = node


class NotRunnable(Qwen3VLError):
    """Claims that cannot run in this session (a missing library, a config they cannot use): the message
    says why and what to do, and their rows read "not run", never a verdict."""


class CacheUnusable(NotRunnable):
    """Neither the cache folder nor the session's private one can take a write (a full disk): what
    needed it does not run, and nothing is said about anybody's file."""


class LockTimeout(NotRunnable):
    """Another process held a cache entry's lock past the bound: what needed the entry does not run."""


class GenaiFolderError(Qwen3VLError):
    """An onnxruntime-genai model folder that cannot be made: a missing library, or genai's builder failed."""


class ProbeFailed(Qwen3VLError, RuntimeError):
    """The process that probes a user's ONNX file failed: our fault, so no location and no verdict from it."""


class OutputContractError(Qwen3VLError, TypeError):
    """A vision forward whose result is neither known output structure (4.57.6's tuple, 5.x's ModelOutput)."""


class ModelRaised(Qwen3VLError):
    """The model under test raised while it was measured for a cached measurement: ``error`` is its own
    exception, a fact about the file; a fault of the cache around it is never wrapped in this."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def child_failure(output: str, returncode: int) -> str:
    """What a failed child process said, in one line: its last exception line, else its last line
    (a builder may print progress after the error), else its exit status."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (errors or lines or [f"exit status {returncode}"])[-1]


def run_module(
    module: str, *args: str, what: str, result: Path, passes: Sequence[int] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` in a child process of this interpreter, which exits with its memory.
    ``ProbeFailed`` ("<what> failed: <its exception line>") unless it exits 0 having written
    ``result``, or exits with one of ``passes``: a failure of ours, never a verdict."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False)
    if done.returncode not in passes and (done.returncode != 0 or not result.is_file()):
        raise ProbeFailed(f"{what} failed: {child_failure(done.stderr, done.returncode)}")
    return done
