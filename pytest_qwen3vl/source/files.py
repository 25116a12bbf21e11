"""The golden and modified modeling files: where they are, whether golden is golden, how to import them.

The golden file is never copied: it is read from the installed transformers. The reference
modified file is that text with the report's one change applied, written to the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.versions import transformers_version

GOLDEN_VERSION = "4.57.6"
GOLDEN_SHA256 = "dd63ed3b124232735b3dca1bfa28f9d6b0d3f7182afcb75dde8f3e724b2b22da"
RELATIVE_PATH = Path("models/qwen3_vl/modeling_qwen3_vl.py")
PACKAGE = "transformers.models.qwen3_vl"

GOLDEN_CONDITION = "layer_num in self.deepstack_visual_indexes"
MODIFIED_CONDITION = (
    'layer_num in self.deepstack_visual_indexes and not (getattr(self, "_skip_deepstack_export", False)'
    " or torch.jit.is_tracing())"
)
GOLDEN_IF_LINE = f"            if {GOLDEN_CONDITION}:\n"
MODIFIED_IF_LINE = f"            if {MODIFIED_CONDITION}:\n"
TRANSFORMERS_MISSING = f"transformers is not installed: pip install 'transformers=={GOLDEN_VERSION}'"


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
            f"this plugin checks against transformers {GOLDEN_VERSION}"
        )
    return path


def check_golden(path: Path) -> None:
    """Insist that the golden file is transformers 4.57.6's, byte for byte."""
    digest = sha256_file(path)
    if digest != GOLDEN_SHA256:
        raise SourceError(
            f"golden file {path} is not transformers {GOLDEN_VERSION}'s modeling_qwen3_vl.py "
            f"(sha256 {digest[:12]}..., installed transformers {transformers_version()}): "
            f"pip install 'transformers=={GOLDEN_VERSION}'"
        )


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
    """The reference modified file in the cache, named by the golden hash so it never goes stale."""
    text = reference_modified_text(golden.read_text(encoding="utf-8"))
    target = cache_dir / "reference" / f"modeling_qwen3_vl_{sha256_file(golden)[:12]}.py"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
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
        raise SourceError(f"{path}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[name]
        raise SourceError(f"{_place_in(path, exc)}: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(module, "Qwen3VLVisionModel", None), type):
        del sys.modules[name]
        raise SourceError(f"{path}: defines no class Qwen3VLVisionModel")
    return module


def _place_in(path: Path, exc: BaseException) -> str:
    """``path:line`` of the deepest frame of ``exc`` inside ``path``, or the bare path."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)
