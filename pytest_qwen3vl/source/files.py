"""The golden and modified modeling files: where they are, whether golden is golden, how to import them.

The golden file is never copied: it is read from the installed transformers. The reference
modified file is that text with the report's one change applied, written to the cache, for
whichever transformers version is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.source.goldens import KNOWN_GOLDENS, REPORT_VERSION, known_versions, version_of_digest
from pytest_qwen3vl.versions import transformers_version

RELATIVE_PATH = Path("models/qwen3_vl/modeling_qwen3_vl.py")
PACKAGE = "transformers.models.qwen3_vl"

GOLDEN_CONDITION = "layer_num in self.deepstack_visual_indexes"
MODIFIED_CONDITION = (
    'layer_num in self.deepstack_visual_indexes and not (getattr(self, "_skip_deepstack_export", False)'
    " or torch.jit.is_tracing())"
)
GOLDEN_IF_LINE = f"            if {GOLDEN_CONDITION}:\n"
MODIFIED_IF_LINE = f"            if {MODIFIED_CONDITION}:\n"
TRANSFORMERS_MISSING = f"transformers is not installed: pip install 'transformers=={REPORT_VERSION}'"


@dataclass(frozen=True)
class GoldenFile:
    """A golden file accepted for a run: which transformers it is, and whether its hash was measured."""

    path: Path
    digest: str
    version: str
    verified: bool

    @property
    def label(self) -> str:
        """``transformers 5.23.0 (verified)``, or why it is not verified."""
        if self.verified:
            return f"transformers {self.version} (verified sha256 {self.digest[:12]}...)"
        return (
            f"transformers {self.version} (unverified: sha256 {self.digest[:12]}... was not measured by "
            f"pytest-qwen3vl; verified versions: {known_versions()})"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed_golden_path() -> Path:
    """The installed transformers' ``modeling_qwen3_vl.py``, found without importing transformers."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(TRANSFORMERS_MISSING)
    path = Path(next(iter(spec.submodule_search_locations))) / RELATIVE_PATH
    if not path.is_file():
        raise SourceError(
            f"transformers {transformers_version()} has no {RELATIVE_PATH}: "
            f"Qwen3-VL needs transformers {known_versions()} (verified) or another version that has it"
        )
    return path


def check_golden(path: Path) -> GoldenFile:
    """Accept a known version's file byte for byte, or the installed file of a version not yet measured.

    A file that is neither (an edited copy, or the installed file of a known version that differs
    from its release) is refused: its verdicts would be about the edits.
    """
    digest = sha256_file(path)
    version = version_of_digest(digest)
    if version is not None:
        return GoldenFile(path, digest, version, verified=True)
    installed = transformers_version()
    if installed is not None and installed not in KNOWN_GOLDENS and _is_installed_golden(path):
        return GoldenFile(path, digest, installed, verified=False)
    raise SourceError(
        f"golden file {path} is no known transformers' modeling_qwen3_vl.py (sha256 {digest[:12]}..., "
        f"installed transformers {installed}; verified: {known_versions()}): reinstall transformers "
        "or name an unmodified file"
    )


def golden_label(path: Path | None) -> str:
    """What the golden file is, for headers and reports: version and whether it is verified."""
    if path is None:
        return "not found"
    try:
        return check_golden(path).label
    except SourceError as exc:
        return str(exc)


def _is_installed_golden(path: Path) -> bool:
    try:
        return path.resolve() == installed_golden_path().resolve()
    except SourceError:
        return False


def reference_modified_text(golden_text: str) -> str:
    """Golden with the report's one change: the DeepStack ``if`` also requires not exporting."""
    if golden_text.count(GOLDEN_IF_LINE) != 1:
        raise SourceError(f"golden text has no single line {GOLDEN_IF_LINE.strip()!r}")
    return golden_text.replace(GOLDEN_IF_LINE, MODIFIED_IF_LINE)


def write_atomic(path: Path, text: str) -> Path:
    """Write a file so that a concurrent reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def write_reference_modified(golden: Path, cache_dir: Path) -> Path:
    """The reference modified file in the cache, named by the golden hash so it never goes stale, and
    compared as bytes on every use: damage of any kind (not UTF-8 at all) is rewritten, never imported."""
    text = reference_modified_text(golden.read_text(encoding="utf-8"))
    target = cache_dir / "reference" / f"modeling_qwen3_vl_{sha256_file(golden)[:12]}.py"
    if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
        write_atomic(target, text)
    return target


def import_modeling_file(path: Path, role: str) -> ModuleType:
    """Import a modeling file as a module inside ``transformers.models.qwen3_vl``.

    Its relative imports (``from ...activations import ACT2FN``) then resolve against the
    installed transformers, which stays untouched. The module name carries the file's hash, so
    the same file is imported once per process and two different files never collide.
    """
    import transformers.models.qwen3_vl  # noqa: F401  (the parent package must exist first)

    name = f"{PACKAGE}._qwen3vl_{role}_{sha256_file(path)[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SourceError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise syntax_error(str(path), exc, path.read_bytes()) from None
    except Exception as exc:
        del sys.modules[name]
        raise SourceError(f"{_place_in(path, exc)}: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(module, "Qwen3VLVisionModel", None), type):
        del sys.modules[name]
        raise SourceError(f"{path}: defines no class Qwen3VLVisionModel")
    return module


def syntax_error(label: str, exc: SyntaxError, source: bytes) -> SourceError:
    """``label:line: SyntaxError: ...`` in one line. Python gives no line for a null byte (the compiler
    refuses the whole text), so the line of the first one is counted here: ``path:None:`` helps nobody."""
    line = exc.lineno
    if line is None and b"\x00" in source:
        line = source[: source.index(b"\x00")].count(b"\n") + 1
    place = label if line is None else f"{label}:{line}"
    return SourceError(f"{place}: SyntaxError: {exc.msg}")


def _place_in(path: Path, exc: BaseException) -> str:
    """``path:line`` of the deepest frame of ``exc`` inside ``path``, or the bare path."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)
