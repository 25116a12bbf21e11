"""The artifact cache: one build per key across processes, nothing published by a killed builder."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_qwen3vl.errors import CacheUnusable, ExporterUnavailable, ExportFailed, LockTimeout
from pytest_qwen3vl.store.cache import (
    MAKING,
    ArtifactCache,
    CacheTally,
    Fallbacks,
    Unpublished,
    cache_key,
    code_digest,
    file_digest,
)
from pytest_qwen3vl.versions import ABSENT, library_versions
from tests.helpers import (
    delete_keep_folder,
    flip_a_middle_byte,
    garbage,
    lose_the_manifest,
    manifest_of_the_wrong_shape,
    truncate,
)

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier, Event

PARTS = {"source": "abc123", "config": '{"depth": 5}', "grid": "1x4x4", "exporter": "torchscript"}
# Spawned children start clean (no copy of this process's torch threads) and import this module.
SPAWN = multiprocessing.get_context("spawn")


def _slow_build(path: Path) -> None:
    time.sleep(0.5)  # long enough that the second process asks while the first builds
    path.write_text(f"built by {os.getpid()}\n")


def _build_after_barrier(root: str, barrier: Barrier, results: Queue[str]) -> None:
    barrier.wait()
    results.put(str(ArtifactCache(root).get_or_create(PARTS, "model.onnx", _slow_build)))


def _build_until_killed(root: str, started: Event) -> None:
    def build(path: Path) -> None:
        path.write_text("half an export")
        started.set()
        time.sleep(60)

    ArtifactCache(root).get_or_create(PARTS, "model.onnx", build)


def test_key_changes_with_every_part_and_the_file_name() -> None:
    base = cache_key(PARTS, "model.onnx")
    variants = [cache_key({**PARTS, name: value + "x"}, "model.onnx") for name, value in PARTS.items()]
    variants.append(cache_key({**PARTS, "extra": ""}, "model.onnx"))
    variants.append(cache_key(PARTS, "other.onnx"))
    assert len({base, *variants}) == len(variants) + 1


def test_key_ignores_the_order_of_parts() -> None:
    assert cache_key(dict(reversed(PARTS.items())), "model.onnx") == cache_key(PARTS, "model.onnx")


def test_library_versions_name_every_export_library() -> None:
    versions = library_versions()
    assert set(versions) == {"torch", "transformers", "onnx", "onnxruntime", "onnxscript"}
    assert ABSENT not in versions.values(), versions  # all five are dependencies of the plugin
    assert library_versions(("no-such-distribution",)) == {"no-such-distribution": ABSENT}


def test_second_request_reuses_the_file_and_logs_one_build(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(path: Path) -> None:
        calls.append(path)
        path.write_text("onnx")

    first = cache.get_or_create(PARTS, "model.onnx", build)
    second = cache.get_or_create(PARTS, "model.onnx", build)
    assert first == second == cache.path_for(PARTS, "model.onnx")
    assert first.read_text() == "onnx"
    assert len(calls) == 1
    assert calls[0] != first  # built elsewhere, then published by rename
    assert [(b["status"], b["filename"]) for b in cache.builds()] == [("built", "model.onnx")]
    assert (first.parent / "key.json").is_file()
    assert set(json.loads((first.parent / "manifest.json").read_text())["files"]) == {"key.json", "model.onnx"}
    assert cache.events == {"built": 1, "reused": 1}


def test_a_failed_build_publishes_nothing_is_logged_and_is_retried(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def broken(path: Path) -> None:
        path.write_text("partial")
        raise RuntimeError("exporter exploded")

    with pytest.raises(RuntimeError, match="exporter exploded"):
        cache.get_or_create(PARTS, "model.onnx", broken)
    assert not cache.path_for(PARTS, "model.onnx").exists()
    assert list(cache.staging.iterdir()) == []
    cache.get_or_create(PARTS, "model.onnx", lambda path: path.write_text("ok"))
    assert [b["status"] for b in cache.builds()] == ["failed", "built"]


def test_a_build_that_writes_no_file_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wrote no file"):
        ArtifactCache(tmp_path).get_or_create(PARTS, "model.onnx", lambda path: None)


def test_two_processes_asking_at_once_build_once(tmp_path: Path) -> None:
    barrier = SPAWN.Barrier(2)
    results = SPAWN.Queue()
    workers = [SPAWN.Process(target=_build_after_barrier, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    paths = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    cache = ArtifactCache(tmp_path)
    assert paths[0] == paths[1] == str(cache.path_for(PARTS, "model.onnx"))
    builds = cache.builds()
    assert [b["status"] for b in builds] == ["built"]
    assert Path(paths[0]).read_text() == f"built by {builds[0]['pid']}\n"


def test_a_killed_builder_leaves_no_published_file(tmp_path: Path) -> None:
    started = SPAWN.Event()
    builder = SPAWN.Process(target=_build_until_killed, args=(str(tmp_path), started))
    builder.start()
    assert started.wait(timeout=60), "the builder never started"
    builder.kill()
    builder.join(timeout=60)
    cache = ArtifactCache(tmp_path)
    assert not cache.path_for(PARTS, "model.onnx").exists()
    assert len(list(cache.staging.iterdir())) == 1  # its half-written folder

    path = cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("whole"))
    assert path.read_text() == "whole"
    assert list(cache.staging.iterdir()) == []  # the leftover went with the next build
    assert [b["status"] for b in cache.builds()] == ["built"]


@pytest.mark.parametrize("harm", [truncate, flip_a_middle_byte, delete_keep_folder, lose_the_manifest,
                                  manifest_of_the_wrong_shape, garbage],
                         ids=["truncated", "byte-flipped", "file-deleted", "manifest-lost", "manifest-shape",
                              "garbage"])
def test_a_damaged_entry_is_rebuilt_never_returned(tmp_path: Path, harm: Callable[[Path], None]) -> None:
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("a whole export, byte for byte"))
    harm(path)

    later = ArtifactCache(tmp_path)  # a later run: nothing verified in memory yet
    again = later.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("a whole export, byte for byte"))
    assert again == path and again.read_text() == "a whole export, byte for byte"
    assert [b["status"] for b in later.builds()] == ["built", "damaged", "built"]
    assert later.builds()[1]["reason"]
    assert later.events == {"damaged": 1, "built": 1}


def test_an_unpublished_result_comes_back_and_is_built_again(tmp_path: Path) -> None:
    """A build that raises ``Unpublished`` hands its value to the caller; nothing is kept for the next one."""
    cache = ArtifactCache(tmp_path)

    def not_kept(path: Path) -> None:
        path.write_text("a verdict every run measures")
        raise Unpublished("serves 8 of 9 grids")

    for _ in range(2):
        with pytest.raises(Unpublished) as raised:
            cache.get_or_create(PARTS, "sweep.json", not_kept)
        assert raised.value.value == "serves 8 of 9 grids"
    assert not cache.path_for(PARTS, "sweep.json").exists() and list(cache.staging.iterdir()) == []
    assert [b["status"] for b in cache.builds()] == ["unpublished", "unpublished"]


def test_the_recorded_sha256_is_the_files_and_only_for_a_verified_file(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("whole"))
    assert ArtifactCache(tmp_path).recorded_sha256(path) == file_digest(path)
    truncate(path)
    with pytest.raises(ValueError, match="not a verified file"):
        ArtifactCache(tmp_path).recorded_sha256(path)
    with pytest.raises(ValueError, match="not a verified file"):
        cache.recorded_sha256(tmp_path / "elsewhere.onnx")


def test_damage_after_verification_in_the_same_process_is_noticed(tmp_path: Path) -> None:
    """Verification is remembered by size and mtime: a file changed afterwards is checked again."""
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("whole"))
    truncate(path)
    assert cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("whole")).read_text() == "whole"
    assert cache.events["damaged"] == 1


def _dynamo_fails(path: Path) -> None:
    raise ExportFailed("dynamo", "GuardOnDataDependentSymNode: at fast_pos_embed_interpolate", "the long story")


def test_a_failed_export_is_remembered_and_not_tried_again(tmp_path: Path) -> None:
    with pytest.raises(ExportFailed):
        ArtifactCache(tmp_path).get_or_create(PARTS, "model.onnx", _dynamo_fails)
    later = ArtifactCache(tmp_path)
    with pytest.raises(ExportFailed) as remembered:
        later.get_or_create(PARTS, "model.onnx", lambda p: pytest.fail("a remembered failure was tried again"))
    assert remembered.value.summary == "GuardOnDataDependentSymNode: at fast_pos_embed_interpolate"
    assert remembered.value.details == "the long story" and remembered.value.exporter == "dynamo"
    assert later.events == {"remembered": 1}
    assert [b["status"] for b in later.builds()] == ["failed"]


def test_a_remembered_failure_does_not_outlive_a_change_of_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(ExportFailed):
        ArtifactCache(tmp_path).get_or_create(PARTS, "model.onnx", _dynamo_fails)
    newer_torch = {**PARTS, "libraries": '{"torch": "9.9.9"}'}
    path = ArtifactCache(tmp_path).get_or_create(newer_torch, "model.onnx", lambda p: p.write_text("now it exports"))
    assert path.read_text() == "now it exports"


@pytest.mark.parametrize("record", ["", "{not json", '{"summary": "no exporter"}'])
def test_an_unreadable_failure_record_counts_as_none(tmp_path: Path, record: str) -> None:
    cache = ArtifactCache(tmp_path)
    cache.failures.mkdir(parents=True)
    (cache.failures / f"{cache_key(PARTS, 'model.onnx')}.json").write_text(record)
    assert cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("built")).read_text() == "built"


def test_a_missing_exporter_is_not_remembered(tmp_path: Path) -> None:
    """Installing onnxscript changes no key part, so its absence must be asked again every time."""

    def unavailable(path: Path) -> None:
        raise ExporterUnavailable("dynamo", "ModuleNotFoundError: the dynamo exporter needs onnxscript")

    with pytest.raises(ExporterUnavailable):
        ArtifactCache(tmp_path).get_or_create(PARTS, "model.onnx", unavailable)
    assert ArtifactCache(tmp_path).get_or_create(PARTS, "model.onnx", lambda p: p.write_text("ok")).is_file()


def test_a_torn_log_line_from_a_killed_process_is_skipped(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("ok"))
    with cache.log_path.open("a") as log:
        log.write('{"key": "half a li')
    assert [b["status"] for b in cache.builds()] == ["built"]


def test_the_code_digest_of_a_made_file_covers_the_making_code_only() -> None:
    """An edit to the judging, running, storing or plugin code must not discard every cached export."""
    assert code_digest() == code_digest(*MAKING)
    assert not {"judge", "runtimes", "store", "plugin", "onnxfile"} & set(MAKING), MAKING
    assert {"export", "model", "source"} <= set(MAKING), MAKING
    digests = {code_digest(), code_digest("judge"), code_digest("judge.gate"), code_digest("onnxfile"),
               code_digest("errors.py")}
    assert len(digests) == 5 and all(len(d) == 16 for d in digests)


def test_the_tally_words_what_the_cache_did_summed_over_workers() -> None:
    tally = CacheTally()
    assert tally.line() is None
    tally.add("built")
    tally.merge({"built": 1, "reused": 3, "damaged": 1})
    assert tally.line() == "qwen3vl exports this run: 2 built, 1 damaged entry rebuilt, 3 reused"


def test_a_cache_that_refuses_writes_makes_in_the_spare_and_says_why_once(tmp_path: Path) -> None:
    """A cache folder under a file (as read-only or full, the storage refuses the write): the spare takes it."""
    (tmp_path / "a-file").write_text("")
    faults: list[str] = []
    cache = ArtifactCache(tmp_path / "a-file" / "cache", fallbacks=Fallbacks(tmp_path / "spare", faults.append))
    first = cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("one"))
    second = cache.get_or_create({**PARTS, "grid": "1x8x8"}, "model.onnx", lambda p: p.write_text("two"))
    assert first.is_relative_to(tmp_path / "spare") and second.read_text() == "two"
    assert faults == ["Not a directory"]
    assert [b["status"] for b in cache.builds()] == ["built", "built"]


def test_a_build_the_storage_refuses_is_logged_but_never_counted_as_a_failed_export(tmp_path: Path) -> None:
    """A full disk mid-build: the summary must not say "1 failed" about an export that never got to fail."""
    import errno

    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(CacheUnusable, match=r"\(No space left on device\)$"):
        cache.get_or_create(PARTS, "model.onnx", full)
    assert cache.events == {"refused": 1} and [b["status"] for b in cache.builds()] == ["refused"]
    tally = CacheTally()
    tally.merge(cache.events)
    assert tally.line() is None


def test_a_cache_without_a_spare_that_refuses_writes_is_not_runnable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(CacheUnusable, match=r"^not run: the cache at .* cannot be written \(Not a directory\)$"):
        ArtifactCache(tmp_path / "a-file" / "cache").get_or_create(PARTS, "model.onnx", lambda p: p.write_text("x"))


def test_a_build_that_fails_for_its_own_reasons_is_not_the_caches_fault(tmp_path: Path) -> None:
    faults: list[str] = []
    cache = ArtifactCache(tmp_path / "cache", fallbacks=Fallbacks(tmp_path / "spare", faults.append))

    def build(path: Path) -> None:
        (tmp_path / "no-such-input").read_text()

    with pytest.raises(FileNotFoundError):
        cache.get_or_create(PARTS, "model.onnx", build)
    assert faults == [] and not (tmp_path / "spare").exists()


def test_a_reference_modified_file_of_garbage_is_rewritten(tmp_path: Path) -> None:
    from pytest_qwen3vl.source.files import installed_golden_path, write_reference_modified

    golden = installed_golden_path()
    path = write_reference_modified(golden, tmp_path)
    text = path.read_text(encoding="utf-8")
    garbage(path)
    assert write_reference_modified(golden, tmp_path) == path and path.read_text(encoding="utf-8") == text


def test_a_stopped_lock_holder_is_waited_for_aloud_then_given_up(tmp_path: Path) -> None:
    """Another process holds the entry's lock and is stopped (SIGSTOP): never released, never silent."""
    said: list[str] = []
    cache = ArtifactCache(tmp_path, fallbacks=Fallbacks(lock_timeout=2.2, notice_every=1.0, on_wait=said.append))
    lock = cache.locks / f"{cache_key(PARTS, 'model.onnx')}.lock"
    lock.parent.mkdir(parents=True)
    hold = f"import filelock, time; held = filelock.FileLock({str(lock)!r}); held.acquire(); print('held', flush=True)"
    holder = subprocess.Popen([sys.executable, "-c", hold + "; time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        os.kill(holder.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=r"^not run: waited 2 s for another process to make model.onnx \(lock "):
            cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("x"))
        assert 2.2 <= time.monotonic() - started < 6
        assert [line.split(" so far")[0] for line in said] == ["qwen3vl: waiting 1 s", "qwen3vl: waiting 2 s"], said
        assert all(f"for another process to make model.onnx (lock {lock}); giving up after 2 s" in line
                   for line in said), said
        started = time.monotonic()
        with pytest.raises(LockTimeout):  # the same entry again: not waited for twice
            cache.get_or_create(PARTS, "model.onnx", lambda p: p.write_text("x"))
        assert time.monotonic() - started < 0.5
    finally:
        holder.kill()
        holder.wait()
