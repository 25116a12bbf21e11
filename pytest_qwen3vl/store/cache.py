"""A content-addressed artifact cache that xdist workers (and later runs) share, and never trust blindly.

An artifact is named by the sha256 of everything it was made from (the caller's key parts and
the file name). The first worker that asks for it builds it under a per-key file lock; the others
wait on the lock and then find it published. A build happens in a private folder under
``<root>/tmp`` and is published by renaming that folder to ``<root>/objects/<key>``, so a
worker killed mid-build never leaves anything another worker trusts; its leftover folder is
removed by the next build of the same key, and its lock (an advisory ``flock``) dies with it.

Every published folder carries ``manifest.json``: the size and sha256 of each file in it, written
last. Before a folder is reused its files are checked against the manifest; a truncated, changed or
missing file (a full disk, an interrupted copy, a partly restored CI cache) is discarded, logged as
``damaged`` and built again. A damaged cache is never a verdict on anybody's file.

A process that waits for another's lock says so every 30 s (``on_wait``) and gives up after
``lock_timeout`` (30 minutes by default) with ``LockTimeout``: a holder that is stopped (SIGSTOP, a
suspended laptop) never releases an advisory lock, and a session must not hang on it silently.

A build that fails with an ``ExportFailed`` whose ``remember`` is true (the dynamo exporter on
this model) is remembered under the same key, which holds every input including library versions:
a later request raises the same failure without paying for the attempt, and any change of an
input is another key, so a remembered failure cannot outlive its cause.

A build may also hand its result back without publishing it (``Unpublished``): a result that every
run must measure afresh, such as a gate table with unmeasured cells or a sweep with a wrong grid.

Every build, whether it succeeded, failed, was not published or replaced a damaged entry, appends
one JSON line to ``<root>/builds.log`` (key, key parts, file name, status, seconds, pid, xdist
worker, time); a log that cannot be written is skipped, never the build.

The cache is an optimisation. When its folder cannot take a write (read-only, full, not a folder:
``storage_fault``), what is already published there is still read, and what must be made is made
in ``Fallbacks.spare``, a private cache of the session, and ``on_fault`` is told why once. When the
spare cannot take it either, ``CacheUnusable`` (a ``NotRunnable``) says so: the tests that needed it do
not run, and nothing is said about anybody's file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import CacheUnusable, ExportFailed, LockTimeout

if TYPE_CHECKING:
    from filelock import BaseFileLock

MANIFEST = "manifest.json"
KEY_FILE = "key.json"
_CHUNK = 1 << 20

# What ``events`` counts: each a word of the summary line.
BUILT, FAILED, DAMAGED, REMEMBERED, REUSED = "built", "failed", "damaged", "remembered", "reused"
# A build's status in the log when it raised ``Unpublished``, and when the storage refused its writes
# (not a failed export: the summary line does not word it, ``docs/faults.md``'s line says it).
UNPUBLISHED = "unpublished"
REFUSED = "refused"


class Unpublished(Exception):
    """Raised by a build to hand ``value`` back to its caller without publishing anything: a result
    that must be measured again in every run. ``get_or_create`` logs it and lets it through."""

    def __init__(self, value: Any) -> None:
        super().__init__("built, not published")
        self.value = value


# What an ``OSError`` says when the storage refused a write: the cache's fault, never the file's.
STORAGE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR})


def storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is a folder refusing a write (read-only, full, no permission, not a folder)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def cache_key(key_parts: Mapping[str, str], filename: str) -> str:
    """sha256 (hex) of the key parts, sorted by name, and the file name."""
    document = json.dumps({"parts": dict(sorted(key_parts.items())), "filename": filename}, sort_keys=True)
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


# What changes a made file (an export, a reference file): the making code and everything below it.
# Judging, running and plugin code is not in it, so an edit there never discards a cached export.
MAKING = ("errors.py", "versions.py", "source", "model", "onnxfile.names", "export")
# What changes a measurement of a file (a sweep, a pipeline cost): the making code, reading, running, judging.
MEASURING = (*MAKING, "onnxfile", "runtimes", "judge")


@functools.cache
def code_digest(*parts: str) -> str:
    """The plugin's version and a hash of the code a cached thing is made or measured by: the named
    folders or modules (``"judge"``, ``"judge.gate"``, ``"errors.py"``, relative to the package),
    ``MAKING`` when none are named. Something made by changed code must not be reused, nor its
    remembered failure."""
    from pytest_qwen3vl import __version__

    package = Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for part in parts or MAKING:
        folder = package / part.replace(".", "/")
        if folder.is_dir():
            files.extend(sorted(f for f in folder.rglob("*") if f.suffix in (".py", ".json")))
        else:
            files.append(package / part if part.endswith(".py") else folder.with_suffix(".py"))
    digest = hashlib.sha256(__version__.encode())
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 (hex) of a file, read in chunks so a 1.3 GB export does not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Record the size and sha256 of every file in ``folder`` (the manifest itself excepted)."""
    entries = {
        path.name: {"size": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n")
    return entries


def damage(folder: Path, filename: str) -> str | None:
    """Why a published folder cannot be trusted, or None when every file matches its manifest."""
    try:
        entries = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest"
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
        return "the manifest is not a table of files"
    if filename not in entries:
        return f"the manifest does not list {filename}"
    for name, entry in sorted(entries.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry.get("size"):
            return f"{name} has {size} bytes, the manifest says {entry.get('size')}"
        if file_digest(path) != entry.get("sha256"):
            return f"{name} differs from its recorded sha256"
    return None


# How long a process waits for another that holds an entry's lock (a 4B export takes minutes), and
# how often it says that it waits.
LOCK_TIMEOUT = 1800.0
NOTICE_EVERY = 30.0


@dataclass(frozen=True)
class Fallbacks:
    """What a cache does when it cannot go on as asked: where to make what its folder refuses
    (``spare``) and whom to tell why (``on_fault``, once); how long to wait for another process's
    lock and whom to tell meanwhile (``on_wait``, every ``notice_every`` seconds)."""

    spare: Path | None = None
    on_fault: Callable[[str], None] | None = None
    lock_timeout: float = LOCK_TIMEOUT
    notice_every: float = NOTICE_EVERY
    on_wait: Callable[[str], None] | None = None

    def under(self, name: str) -> Fallbacks:
        """The same, for the cache in the folder ``name`` of the first one's root."""
        return dataclasses.replace(self, spare=self.spare / name if self.spare is not None else None)


class ArtifactCache:
    """Files built once per key, shared by every process that uses the same ``root``.

    ``events`` counts what this object did (built, failed, damaged, remembered, reused), so a run
    can say what its cache did; ``on_event`` (optional) is called with each event as it happens.
    ``fallbacks`` says what to do when it cannot go on as asked (a folder refusing a write, a lock
    held too long).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        on_event: Callable[[str], None] | None = None,
        fallbacks: Fallbacks | None = None,
    ) -> None:
        self.root = Path(root)
        self.fallbacks = fallbacks or Fallbacks()
        self._fallback: ArtifactCache | None = None
        self._stuck: dict[str, str] = {}  # keys whose lock was held past the bound: not waited for again
        self.objects = self.root / "objects"
        self.failures = self.root / "failures"
        self.staging = self.root / "tmp"
        self.locks = self.root / "locks"
        self.log_path = self.root / "builds.log"
        self.events: Counter[str] = Counter()
        self._on_event = on_event
        self._verified: dict[Path, tuple[int, int]] = {}

    def path_for(self, key_parts: Mapping[str, str], filename: str) -> Path:
        """Where the artifact is (or will be) published."""
        return self.objects / cache_key(key_parts, filename) / filename

    def get_or_create(self, key_parts: Mapping[str, str], filename: str, build: Callable[[Path], None]) -> Path:
        """The published, verified file for the key, built first by ``build(path)`` if needed.

        ``build`` must write ``path`` (a fresh folder's file); anything else it writes into that
        folder is published along with it. Its exceptions propagate and nothing is published; an
        ``ExportFailed`` with ``remember`` set is also recorded and raised again on later requests,
        an ``Unpublished`` is built again on the next request.
        """
        published = self.path_for(key_parts, filename)
        if self._trusted(published, filename):  # a read: a read-only cache still serves what it holds
            self._count(REUSED)
            return published
        if self._fallback is None:
            try:
                return self._get_or_make(key_parts, filename, build)
            except OSError as exc:
                if not storage_fault(exc):
                    raise
                spare = self.fallbacks.spare
                if spare is None or spare == self.root:
                    raise CacheUnusable(f"not run: the cache at {self.root} cannot be written "
                                        f"({exc.strerror or type(exc).__name__})") from exc
                self._fallback = ArtifactCache(spare, self._on_event, dataclasses.replace(self.fallbacks, spare=None))
                if self.fallbacks.on_fault is not None:
                    self.fallbacks.on_fault(exc.strerror or type(exc).__name__)
        return self._fallback.get_or_create(key_parts, filename, build)

    def _get_or_make(self, key_parts: Mapping[str, str], filename: str, build: Callable[[Path], None]) -> Path:
        key = cache_key(key_parts, filename)
        published = self.objects / key / filename
        self._raise_remembered(key)
        for folder in (self.objects, self.staging, self.locks):
            folder.mkdir(parents=True, exist_ok=True)
        lock = self._acquire(key, filename)
        try:
            if self._trusted(published, filename):
                self._count(REUSED)
                return published
            self._raise_remembered(key)
            self._discard_leftovers(key)
            problem = damage(published.parent, filename) if published.parent.exists() else None
            if problem is not None:
                self._discard(published.parent)
                self._log(key, key_parts, filename, DAMAGED, 0.0, problem)
            self._build(key, key_parts, filename, build)
        finally:
            lock.release()
        return published

    def _acquire(self, key: str, filename: str) -> BaseFileLock:
        """The key's lock, waited for in steps of ``notice_every`` seconds, ``on_wait`` told after each;
        ``LockTimeout`` after ``lock_timeout`` (a stopped holder never lets go)."""
        from filelock import FileLock, Timeout  # imported here: ~30 ms that a cache hit does not need

        if key in self._stuck:
            raise LockTimeout(self._stuck[key])
        lock = FileLock(self.locks / f"{key}.lock")
        limit, every, waited = self.fallbacks.lock_timeout, self.fallbacks.notice_every, 0.0
        while True:
            step = min(every, limit - waited)
            try:
                lock.acquire(timeout=step)
                return lock
            except Timeout:
                waited += step
            what = f"another process to make {filename} (lock {lock.lock_file})"
            if waited >= limit:
                self._stuck[key] = f"not run: waited {waited:.0f} s for {what}, the longest allowed"
                raise LockTimeout(self._stuck[key])
            if self.fallbacks.on_wait is not None:
                self.fallbacks.on_wait(f"qwen3vl: waiting {waited:.0f} s so far for {what}; "
                                       f"giving up after {limit:.0f} s")

    def recorded_sha256(self, published: Path) -> str:
        """The sha256 of a file this cache published, as its manifest records it, once the file has
        been checked against the manifest (once per process): a digest of a large file without reading it again."""
        if not self._trusted(published, published.name):
            raise ValueError(f"{published} is not a verified file of the cache at {self.root}")
        entries = json.loads((published.parent / MANIFEST).read_text(encoding="utf-8"))["files"]
        return str(entries[published.name]["sha256"])

    def builds(self) -> list[dict[str, Any]]:
        """Every build logged so far, oldest first (a torn last line, from a killed process, is skipped),
        then those of the spare this process made things in."""
        spared = self._fallback.builds() if self._fallback is not None else []
        if not self.log_path.is_file():
            return spared
        records = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records + spared

    def _build(self, key: str, key_parts: Mapping[str, str], filename: str, build: Callable[[Path], None]) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.staging))
        started = time.perf_counter()
        try:
            build(workdir / filename)
            if not (workdir / filename).is_file():
                raise FileNotFoundError(f"the build for {filename} wrote no file")
            (workdir / KEY_FILE).write_text(json.dumps(dict(sorted(key_parts.items())), indent=1) + "\n")
            write_manifest(workdir)
            self._discard(self.objects / key)
            os.replace(workdir, self.objects / key)
        except BaseException as exc:
            status = UNPUBLISHED if isinstance(exc, Unpublished) else REFUSED if storage_fault(exc) else FAILED
            self._log(key, key_parts, filename, status, time.perf_counter() - started)
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(exc, ExportFailed) and exc.remember:
                self._remember(key, exc)
            raise
        self._log(key, key_parts, filename, BUILT, time.perf_counter() - started)

    def _trusted(self, published: Path, filename: str) -> bool:
        """Whether the published file matches its manifest; checked once per process while unchanged."""
        try:
            stat = published.stat()
        except OSError:
            return False
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(published) == stamp:
            return True
        if damage(published.parent, filename) is not None:
            return False
        self._verified[published] = stamp
        return True

    def _remember(self, key: str, exc: ExportFailed) -> None:
        self.failures.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"exporter": exc.exporter, "summary": exc.summary, "details": exc.details})
        fd, tmp = tempfile.mkstemp(dir=self.failures, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record)
        os.replace(tmp, self.failures / f"{key}.json")

    def _raise_remembered(self, key: str) -> None:
        """Raise the failure recorded for ``key``; an unreadable record counts as none."""
        path = self.failures / f"{key}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            failure = ExportFailed(str(record["exporter"]), str(record["summary"]), str(record.get("details", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._count(REMEMBERED)
        raise failure

    def _discard(self, folder: Path) -> None:
        """Move a folder out of the way, then delete it: readers never see it half deleted."""
        if not folder.exists():
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        graveyard = Path(tempfile.mkdtemp(prefix="discarded.", dir=self.staging))
        os.replace(folder, graveyard / folder.name)
        shutil.rmtree(graveyard, ignore_errors=True)

    def _discard_leftovers(self, key: str) -> None:
        """Remove build folders of this key left by killed builders (we hold the key's lock)."""
        for leftover in self.staging.glob(f"{key}.*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _count(self, event: str) -> None:
        self.events[event] += 1
        if self._on_event is not None:
            self._on_event(event)

    def _log(
        self, key: str, key_parts: Mapping[str, str], filename: str, status: str, seconds: float, reason: str = ""
    ) -> None:
        self._count(status)
        record: dict[str, Any] = {
            "key": key,
            "parts": dict(sorted(key_parts.items())),
            "filename": filename,
            "status": status,
            "seconds": round(seconds, 3),
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", ""),
            "time": round(time.time(), 3),
        }
        if reason:
            record["reason"] = reason
        # One short write to a file opened for appending: lines from several processes don't interleave.
        # The log is for people reading it later: a full disk must not cost the artifact.
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")


@dataclass
class CacheTally:
    """What the export cache did in this run: events counted in each process, summed on the controller.

    Under xdist each worker sends its tally through ``config.workeroutput``; the controller adds them
    up in ``pytest_testnodedown``, so the summary needs no clock and no log parsing.
    """

    events: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # why the cache folder refused a write

    def add(self, event: str) -> None:
        self.events[event] += 1

    def fault(self, why: str) -> None:
        self.faults[why] += 1

    def merge(self, other: Mapping[str, int], faults: Mapping[str, int] | None = None) -> None:
        self.events.update(other)
        self.faults.update(faults or {})

    def line(self) -> str | None:
        """``qwen3vl exports this run: 4 built, 2 failed, 1 damaged entry rebuilt, ...`` or None."""
        words = (
            (BUILT, "built", "built"),
            (FAILED, "failed", "failed"),
            (DAMAGED, "damaged entry rebuilt", "damaged entries rebuilt"),
            (REMEMBERED, "failure remembered", "failures remembered"),
            (REUSED, "reused", "reused"),
        )
        parts = [f"{self.events[e]} {one if self.events[e] == 1 else many}" for e, one, many in words if self.events[e]]
        return f"qwen3vl exports this run: {', '.join(parts)}" if parts else None
