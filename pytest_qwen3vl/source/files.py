"""The golden and modified modeling files: where they are, whether golden is golden, how to import them.

The golden file is never copied: it is read from the installed transformers. The reference
modified file is that text with the report's one change applied, written to the cache, for
whichever transformers version is installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.source.families import FAMILIES, QWEN3_VL, Family, family_of
from pytest_qwen3vl.source.fingerprints import known_file_of_digest, known_files
from pytest_qwen3vl.source.goldens import REPORT_VERSION, known_versions, verified_versions
from pytest_qwen3vl.versions import transformers_version

if TYPE_CHECKING:
    from pytest_qwen3vl.source.coverage import Coverage

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
    """A golden file accepted for a run: its family and transformers version, and what is verified.

    ``known``: a released file whose definitions are stored; ``verified``: a version the whole suite
    was measured on. Any other accepted file is the installed one, and ``coverage`` says which claims
    it is verified for through a verified version with the same definitions.
    """

    path: Path
    digest: str
    version: str
    family: Family
    known: bool
    verified: bool

    @cached_property
    def coverage(self) -> Coverage:
        """Each claim area compared with the verified versions' definitions."""
        from pytest_qwen3vl.source.coverage import coverage

        return coverage(self.path, self.family, self.version, transformers_dir())

    @property
    def label(self) -> str:
        """``transformers 5.23.0 (verified ...)``, or what of it is verified."""
        if self.verified:
            return f"transformers {self.version} (verified sha256 {self.digest[:12]}...)"
        kind = "a released file" if self.known else "installed"
        return (
            f"transformers {self.version} ({kind}, not a verified version; sha256 {self.digest[:12]}...; "
            f"{self.coverage.line()}; verified versions: {known_versions(self.family.name)})"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def transformers_dir() -> Path | None:
    """The installed transformers package folder, found without importing transformers."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_golden_path(family: Family = QWEN3_VL) -> Path:
    """The installed transformers' modeling file of ``family``, found without importing transformers."""
    package = transformers_dir()
    if package is None:
        raise SourceError(TRANSFORMERS_MISSING)
    path = package / family.relative_path
    if not path.is_file():
        raise SourceError(
            f"transformers {transformers_version()} has no {family.relative_path}: "
            f"{family.name} needs transformers {known_versions(family.name)} (verified) or another version that has it"
        )
    return path


def file_family(path: Path) -> Family:
    """The family whose vision class ``path`` defines; Qwen3-VL's for a file that defines none or does
    not parse (the checks that read it say what is wrong with it)."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return QWEN3_VL
    return family_of(tree) or QWEN3_VL


def default_golden(modified: Path | None) -> Path:
    """The installed golden of the modified file's family (Qwen3-VL's when no modified file is named)."""
    return installed_golden_path(file_family(modified) if modified is not None else QWEN3_VL)


def check_golden(path: Path) -> GoldenFile:
    """Accept a released file byte for byte, or the installed file of a version not yet measured.

    A file that is neither (an edited copy, or the installed file of a known version that differs
    from its release) is refused: its verdicts would be about the edits.
    """
    digest = sha256_file(path)
    found = known_file_of_digest(digest)
    if found is not None:
        family_name, known = found
        verified = known.version in verified_versions(family_name)
        return GoldenFile(path, digest, known.version, FAMILIES[family_name], known=True, verified=verified)
    installed = transformers_version()
    family = file_family(path)
    released = known_files().get(family.name, {})
    if installed is not None and installed not in released and _is_installed_golden(path, family):
        return GoldenFile(path, digest, installed, family, known=False, verified=False)
    raise SourceError(
        f"golden file {path} is no known transformers' {family.relative_path.name} (sha256 {digest[:12]}..., "
        f"installed transformers {installed}; known: {', '.join(released) or 'none'}; verified: "
        f"{known_versions(family.name)}): reinstall transformers or name an unmodified file"
    )


def golden_label(path: Path | None) -> str:
    """What the golden file is, for headers and reports: version and whether it is verified."""
    if path is None:
        return "not found"
    try:
        return check_golden(path).label
    except SourceError as exc:
        return str(exc)


def _is_installed_golden(path: Path, family: Family) -> bool:
    try:
        return path.resolve() == installed_golden_path(family).resolve()
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
    target = cache_dir / "reference" / f"{golden.stem}_{sha256_file(golden)[:12]}.py"
    if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
        write_atomic(target, text)
    return target


def import_modeling_file(path: Path, role: str) -> ModuleType:
    """Import a modeling file as a module inside its family's package (``transformers.models.qwen3_vl``).

    Its relative imports (``from ...activations import ACT2FN``) then resolve against the
    installed transformers, which stays untouched. The module name carries the file's hash, so
    the same file is imported once per process and two different files never collide.
    """
    family = file_family(path)
    importlib.import_module(family.package)  # the parent package must exist first
    name = f"{family.package}._qwen3vl_{role}_{sha256_file(path)[:12]}"
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
    if not isinstance(getattr(module, family.vision_class, None), type):
        del sys.modules[name]
        raise SourceError(f"{path}: defines no class {family.vision_class}")
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
