"""Faults of the machine, never verdicts: a few claims run under each fault of the cache (read-only, a
full disk, garbage in its files, copied elsewhere) and their table equals a clean run's, or reads
"not run" where nothing could run. docs/faults.md says what the tool promises under each.

Read-only folders and a full disk are made for real, in a mount namespace of the run (``unshare -m``):
CI runs as root, where ``chmod`` stops nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE, REPO
from tests.helpers import claim_rows, claim_statuses, garbage, manifest_of_the_wrong_shape

# Export claims on the pooled files and the trace hazards (a measurement whose key once held paths).
SELECT = (str(CONFORMANCE / "test_export.py"), "-k",
          "onnx_runtime_computes or same_graph or one_float32 or trace_hazard")
CLAIMS = {"onnx-parity", "export-graph-vs-golden", "export-pooled-embeds", "trace-hazards"}


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare -m (read-only bind mounts)")


def claims_argv(cache: Path, *args: str, select: Sequence[str] = SELECT) -> list[str]:
    """A fresh pytest process running the selected claims on ``cache``."""
    return [sys.executable, "-m", "pytest", *select, "-n", "0", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
            f"--qwen3vl-cache-dir={cache}", "--rootdir", str(cache.parent), "-c", os.devnull, *args]


def run_claims(
    cache: Path, *args: str, read_only: Sequence[Path] = (), tmpfs: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None, select: Sequence[str] = SELECT,
) -> subprocess.CompletedProcess[str]:
    """``claims_argv`` run in a mount namespace that makes each of ``read_only`` a read-only bind mount
    and each of ``tmpfs`` a tmpfs of that size (``"3m"``)."""
    mounts = [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(path))}" for path, size in (tmpfs or {}).items()]
    for path in read_only:
        quoted = shlex.quote(str(path))
        mounts += [f"mount --bind {quoted} {quoted}", f"mount -o remount,ro,bind {quoted}"]
    script = " && ".join([*mounts, "exec " + shlex.join(claims_argv(cache, *args, select=select))])
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=cache.parent,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=900)


def statuses(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    found = claim_statuses(run.stdout)
    assert set(found) == CLAIMS, run.stdout[-3000:]
    return found


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A cache filled by a clean run, and that run's claims table."""
    cache = tmp_path_factory.mktemp("warm") / "cache"
    clean = run_claims(cache)
    assert clean.returncode == 0, clean.stdout[-3000:]
    table = statuses(clean)
    assert set(table.values()) == {"holds"}, table
    return cache, table


def copy_of(warm_cache: Path, tmp_path: Path) -> Path:
    """The warm cache copied to another path, as a CI cache is restored."""
    copy = tmp_path / "restored"
    shutil.copytree(warm_cache, copy, symlinks=True)
    return copy


def test_a_cache_read_only_from_the_start_makes_in_a_private_cache(
    tmp_path: Path, warm: tuple[Path, dict[str, str]]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    run = run_claims(cache, read_only=[cache])
    assert statuses(run) == warm[1], run.stdout[-3000:]
    assert f"qwen3vl cache: {cache} refused a write (Read-only file system)" in run.stdout


def test_a_warm_cache_copied_elsewhere_and_read_only_is_reused(
    tmp_path: Path, warm: tuple[Path, dict[str, str]]
) -> None:
    cache = copy_of(warm[0], tmp_path)
    run = run_claims(cache, read_only=[cache])
    assert statuses(run) == warm[1], run.stdout[-3000:]
    assert "refused a write" not in run.stdout, "an entry of the copied cache was not reused"
    assert "built" not in next(line for line in run.stdout.splitlines() if line.startswith("qwen3vl exports"))


def test_a_full_disk_makes_in_a_private_cache(tmp_path: Path, warm: tuple[Path, dict[str, str]]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    run = run_claims(cache, tmpfs={cache: "3m"})
    assert statuses(run) == warm[1], run.stdout[-3000:]
    assert f"qwen3vl cache: {cache} refused a write (No space left on device)" in run.stdout


def test_when_no_folder_takes_a_write_the_claims_are_not_run(
    tmp_path: Path, warm: tuple[Path, dict[str, str]]
) -> None:
    """A read-only cache and a 1 MB private one: the exports fit nowhere, the trace hazards (text) still do."""
    cache, spare = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir()
    spare.mkdir()
    run = run_claims(cache, read_only=[cache], tmpfs={spare: "1m"}, env={"TMPDIR": str(spare)})
    exports = {"onnx-parity", "export-graph-vs-golden", "export-pooled-embeds"}
    assert statuses(run) == {**warm[1], **dict.fromkeys(exports, "not run")}, run.stdout[-3000:]
    assert "cannot be written (No space left on device)" in run.stdout
    assert "failed" not in "".join(line for line in run.stdout.splitlines() if line.startswith("qwen3vl exports"))
    assert run.returncode == 0, run.stdout[-3000:]


def test_a_cache_dir_that_is_a_file_gives_the_session_a_private_cache(
    tmp_path: Path, warm: tuple[Path, dict[str, str]]
) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    run = run_claims(cache)
    assert statuses(run) == warm[1], run.stdout[-3000:]
    said = f"qwen3vl cache: {cache} is not usable (a file, not a folder); this session used a private cache"
    assert said in run.stdout, run.stdout[-3000:]


def test_a_cache_dir_that_is_a_file_and_a_private_cache_too_small_for_anything(tmp_path: Path) -> None:
    """Nothing takes even the reference modified file (the private cache is 16 kB): every row is not run."""
    cache, spare = tmp_path / "cache", tmp_path / "tmp"
    cache.write_text("not a folder")
    spare.mkdir()
    run = run_claims(cache, tmpfs={spare: "16k"}, env={"TMPDIR": str(spare)})
    assert set(statuses(run).values()) == {"not run"}, run.stdout[-3000:]
    assert "(No space left on device)" in claim_rows(run.stdout)["onnx-parity"], run.stdout[-3000:]


def test_xdist_workers_share_one_private_cache(tmp_path: Path, warm: tuple[Path, dict[str, str]]) -> None:
    """Two workers, a read-only cache: each export is made once, in the private cache both use."""
    cache = tmp_path / "cache"
    cache.mkdir()
    run = run_claims(cache, "-n", "2", read_only=[cache])
    assert statuses(run) == warm[1], run.stdout[-3000:]
    assert "qwen3vl exports this run: 2 built" in run.stdout, run.stdout[-3000:]
    assert run.stdout.count("refused a write (Read-only file system)") == 1


def _reference_file(cache: Path) -> Path:
    return next((cache / "reference").glob("modeling_qwen3_vl_*.py"))


def _modified_export(cache: Path) -> Path:
    return next((cache / "exports" / "objects").glob("*/modified-pooled-torchscript-*.onnx"))


def _trace_hazards(cache: Path) -> Path:
    return next((cache / "exports" / "measured" / "objects").glob("*/trace-hazards.txt"))


def _builds_log(cache: Path) -> Path:
    return cache / "exports" / "builds.log"


def _key_file(cache: Path) -> Path:
    return _modified_export(cache).parent / "key.json"


@pytest.mark.parametrize(("where", "harm"), [(_reference_file, garbage), (_modified_export, garbage),
                                             (_modified_export, manifest_of_the_wrong_shape),
                                             (_trace_hazards, garbage), (_builds_log, garbage), (_key_file, garbage)],
                         ids=["reference-garbage", "export-garbage", "manifest-shape", "measured-garbage",
                              "log-garbage", "key-garbage"])
def test_garbage_in_the_cache_heals_in_one_run(
    tmp_path: Path, warm: tuple[Path, dict[str, str]], where: Callable[[Path], Path], harm: Callable[[Path], None]
) -> None:
    cache = copy_of(warm[0], tmp_path)
    harm(where(cache))
    run = run_claims(cache)
    assert statuses(run) == warm[1], run.stdout[-3000:]
    healed = run_claims(cache)
    assert statuses(healed) == warm[1] and " built" not in healed.stdout, healed.stdout[-3000:]


def test_a_session_waiting_on_a_stopped_one_says_so_and_gives_up(tmp_path: Path) -> None:
    """One session is stopped (SIGSTOP) while it makes an export; a second on the same cache says what it
    waits for every 30 s and gives up at its bound: the export's rows "not run", the rest measured."""
    cache = tmp_path / "cache"
    staging = cache / "exports" / "tmp"
    first = subprocess.Popen(claims_argv(cache), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (staging.is_dir() and any(staging.iterdir())):
            assert first.poll() is None, "the first session ended before any export started"
            assert time.monotonic() < deadline, "no export started within 300 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGSTOP)
        second = run_claims(cache, "--qwen3vl-lock-timeout=35")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    table = statuses(second)
    waited = [claim for claim, row in claim_rows(second.stdout).items() if "not run: waited 35 s for another" in row]
    assert waited and all(table[claim] == "not run" for claim in waited), second.stdout[-3000:]
    assert "fails" not in table.values(), table
    assert "qwen3vl: waiting 30 s so far for another process to make " in second.stderr, second.stderr[-2000:]


def test_a_copied_read_only_cache_serves_the_genai_folder(tmp_path: Path) -> None:
    """The genai folder is keyed by what its checkpoint is made from, not by where the cache wrote it."""
    pytest.importorskip("onnxruntime_genai")
    select = (str(CONFORMANCE / "test_genai.py"), "-k", "processor_matches")
    cache = tmp_path / "cache"
    clean = run_claims(cache, select=select)
    assert claim_statuses(clean.stdout)["genai-preprocessing"] in ("holds", "erratum"), clean.stdout[-3000:]
    copy = copy_of(cache, tmp_path)
    run = run_claims(copy, read_only=[copy], select=select)
    assert claim_statuses(run.stdout) == claim_statuses(clean.stdout), run.stdout[-3000:]
    assert "refused a write" not in run.stdout, "the genai folder or its checkpoint was made again"
