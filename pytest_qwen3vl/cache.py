"""A content-addressed artifact cache that xdist workers (and later runs) share.

An artifact is named by the sha256 of everything it was made from (the caller's key parts and
the file name). The first worker that asks for it builds it under a per-key file lock; the others
wait on the lock and then find it published. A build happens in a private folder under
``<root>/tmp`` and is published by renaming that folder to ``<root>/objects/<key>``, so a
worker killed mid-build never leaves anything another worker trusts; its leftover folder is
removed by the next build of the same key.

Failures are not cached: a failing build raises in the worker that ran it, and the next worker
asking for the key builds again. The one expected failure (the dynamo exporter on this model)
fails within seconds, so a cached failure would save little and could outlive its cause.

Every build, whether it succeeded or failed, appends one JSON line to ``<root>/builds.log``
(key, key parts, file name, status, seconds, pid, xdist worker, time), so a run can count the exports it did.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an export depends on, read from metadata (no imports)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cache_key(key_parts: Mapping[str, str], filename: str) -> str:
    """sha256 (hex) of the key parts, sorted by name, and the file name."""
    document = json.dumps({"parts": dict(sorted(key_parts.items())), "filename": filename}, sort_keys=True)
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class ArtifactCache:
    """Files built once per key, shared by every process that uses the same ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.staging = self.root / "tmp"
        self.locks = self.root / "locks"
        self.log_path = self.root / "builds.log"

    def path_for(self, key_parts: Mapping[str, str], filename: str) -> Path:
        """Where the artifact is (or will be) published."""
        return self.objects / cache_key(key_parts, filename) / filename

    def get_or_create(self, key_parts: Mapping[str, str], filename: str, build: Callable[[Path], None]) -> Path:
        """The published file for the key, built first by ``build(path)`` if no process has yet.

        ``build`` must write ``path`` (a fresh folder's file); anything else it writes into that
        folder is published along with it. Its exceptions propagate and nothing is published.
        """
        from filelock import FileLock  # imported here: ~30 ms that a cache hit does not need

        key = cache_key(key_parts, filename)
        published = self.objects / key / filename
        if published.is_file():
            return published
        for folder in (self.objects, self.staging, self.locks):
            folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.locks / f"{key}.lock"):
            if published.is_file():
                return published
            self._discard_leftovers(key)
            workdir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.staging))
            started = time.perf_counter()
            try:
                build(workdir / filename)
                if not (workdir / filename).is_file():
                    raise FileNotFoundError(f"the build for {filename} wrote no file")
                (workdir / "key.json").write_text(json.dumps(dict(sorted(key_parts.items())), indent=1) + "\n")
                shutil.rmtree(self.objects / key, ignore_errors=True)  # a folder without the file
                os.replace(workdir, self.objects / key)
            except BaseException:
                self._log(key, key_parts, filename, "failed", time.perf_counter() - started)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            self._log(key, key_parts, filename, "built", time.perf_counter() - started)
        return published

    def builds(self) -> list[dict[str, Any]]:
        """Every build logged so far, oldest first."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def _discard_leftovers(self, key: str) -> None:
        """Remove build folders of this key left by killed builders (we hold the key's lock)."""
        for leftover in self.staging.glob(f"{key}.*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _log(self, key: str, key_parts: Mapping[str, str], filename: str, status: str, seconds: float) -> None:
        record = {
            "key": key,
            "parts": dict(sorted(key_parts.items())),
            "filename": filename,
            "status": status,
            "seconds": round(seconds, 3),
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", ""),
            "time": round(time.time(), 3),
        }
        # One short write to a file opened for appending: lines from several processes don't interleave.
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
