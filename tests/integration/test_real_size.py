"""Real-size presets (released vision dimensions, random weights): run only with --qwen3vl-run-slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qwen3vl.model.configs import resolve_config
from tests.conftest import REPO, RunSuite
from tests.helpers import claim_row

pytestmark = pytest.mark.qwen3vl_slow

# The released configs' vision towers, as published in their config.json files.
RELEASED = {
    "2b": {"depth": 24, "hidden_size": 1024, "out_hidden_size": 2048, "deepstack_visual_indexes": [5, 11, 17]},
    "4b": {"depth": 24, "hidden_size": 1024, "out_hidden_size": 2560, "deepstack_visual_indexes": [5, 11, 17]},
    "8b": {"depth": 27, "hidden_size": 1152, "out_hidden_size": 4096, "deepstack_visual_indexes": [8, 16, 24]},
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_preset_runs_the_runtime_claim_at_released_size(run_suite: RunSuite, name: str) -> None:
    spec = resolve_config(name, REPO)
    assert {k: spec.vision[k] for k in RELEASED[name]} == RELEASED[name]
    result = run_suite("test_runtime.py", "test_contracts.py", f"--qwen3vl-config={name}", "--qwen3vl-grid=1,8,8")
    result.assert_outcomes(passed=8)
    line = claim_row(result, "runtime-equivalence")
    assert " holds " in line and f"pooled (16, {RELEASED[name]['out_hidden_size']})" in line, line


def test_2b_pooled_width_is_an_erratum_to_2560(run_suite: RunSuite) -> None:
    result = run_suite("test_export.py", "-k", "one_float32_matrix", "--qwen3vl-config=2b", "--qwen3vl-grid=1,8,8")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*export-pooled-embeds*erratum*2048*"])


def test_4b_grid_free_export_serves_the_sweep(run_suite: RunSuite) -> None:
    """One grid-free export at the 4B's dimensions, traced at 1x24x24, checked on all nine sweep grids."""
    result = run_suite("test_recipes.py", "-k", "one_grid_free_file", "--qwen3vl-config=4b")
    result.assert_outcomes(passed=1)
    assert "serves 9 of 9 grids" in claim_row(result, "grid-free-export")


# Runs a command and prints, last, the peak RSS (KiB) of the largest process it waited for.
_PEAK = r"""
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(done.stdout + done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
PIPELINE_PEAK_GB = 20  # the aim for the 2B's pipeline claims with the language model loaded


def _measured(*argv: str) -> tuple[str, float]:
    """Output and the peak RSS in GB of ``argv``'s largest process, measured from outside."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=True).stdout
    text, _, peak = out.rstrip().rpartition("\n")
    return text, int(peak) / 1024**2


def test_2b_checkpoint_pipeline_claims_with_the_language_model(tmp_path: Path) -> None:
    """A 2B checkpoint folder in the released layout (language model in bfloat16, tied embeddings),
    and the pipeline claims on it: the language model is loaded in bfloat16, DeepStack kept computes
    golden, pooled-only does not, and no process of either command passes 20 GB."""
    folder = tmp_path / "ckpt-2b"
    written, write_gb = _measured(str(Path(sys.executable).with_name("qwen3vl-checkpoint")), "--config", "2b",
                                  "--seed", "0", str(folder))
    assert "language model in bfloat16" in written, written
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    output, run_gb = _measured(
        sys.executable, "-m", "pytest", str(REPO / "conformance" / "test_pipeline.py"), "-q", "-n", "0",
        "-p", "no:cacheprovider", f"--qwen3vl-config={folder}", "--qwen3vl-grid=1,24,24",
        f"--qwen3vl-cache-dir={tmp_path / 'cache'}", "--rootdir", str(tmp_path), "-c", str(ini),
    )
    print(f"qwen3vl-checkpoint --config 2b: peak {write_gb:.2f} GB; pipeline claims: peak {run_gb:.2f} GB")
    print("\n".join(line for line in output.splitlines() if "pipeline-" in line))
    kept = next(line for line in output.splitlines() if "pipeline-deepstack-kept" in line)
    like = next(line for line in output.splitlines() if "pipeline-like-golden" in line)
    assert " holds " in kept and "language model in bfloat16" in kept, output
    assert " erratum " in like, output
    assert max(write_gb, run_gb) < PIPELINE_PEAK_GB, (write_gb, run_gb)
