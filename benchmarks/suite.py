"""The conformance suite's wall time over the work it cannot avoid, per worker count.

For each ``--workers`` value the suite runs once with a fresh export cache (cold), while the peak
RSS of every process in the run is sampled, and once more on the cache it left (warm: every export
reused, every failed export remembered). The necessary work is then timed in one fresh process:
importing the libraries once, building both models, one eager forward each on the run's grid and
the sweep, every export the suite made (read from the cache's build log, recipes through their
recipe), one ONNX Runtime run, the DeepStack gate of both files and the pipeline claims' whole-model
forward. The onnxruntime-genai claims are not counted: run without the ``genai`` extra, or see
``benchmarks/genai.py``. Prints the ratios: cold
over all of it, warm over all of it but the exports.

    python benchmarks/suite.py                                   # tiny, 1x24x24, -n 1 and -n 2
    python benchmarks/suite.py --config 4b --workers 2           # real 4B dimensions
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

NECESSARY = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers.models.qwen3_vl.modeling_qwen3_vl, onnx, onnxruntime
from pathlib import Path
from pytest_qwen3vl.export.builder import export_vision
from pytest_qwen3vl.judge.gate import condition_of, measure_gate
from pytest_qwen3vl.export.recipes import export_recipe
from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_pooled
from pytest_qwen3vl.model.build import build_pair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import SWEEP, Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.model.pipeline import build_full_model, golden_run, image_counts, make_prompt
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path, write_reference_modified
config, grid_text, cache, builds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
t1 = time.perf_counter()
golden = installed_golden_path()
modified = write_reference_modified(golden, cache)
spec = resolve_config(config, golden.parent)
modules = {"golden": import_modeling_file(golden, "golden"), "modified": import_modeling_file(modified, "modified")}
pair = build_pair(modules["golden"], modules["modified"], spec, 0)
t2 = time.perf_counter()
grid = Grid.parse(grid_text)
with torch.inference_mode():  # the eager claims: both models on the run's grid and the sweep
    for g in dict.fromkeys((grid, *SWEEP)):
        inputs = make_inputs(g, spec, 0)
        pair.golden(*inputs.args); pair.modified(*inputs.args)
t3 = time.perf_counter()
first = None
for i, parts in enumerate(builds):  # every export the run made, each once
    model = pair.golden if parts["model"] == "golden" else pair.modified
    path = cache / f"necessary-{i}.onnx"
    try:
        if parts["recipe"] != "builder":  # every key names its recipe; the builder's is export_vision
            export_recipe(model, parts["recipe"], path, grid=Grid.parse(parts["grid"]), exporter=parts["exporter"],
                          layout="stacked" if parts["wrapper"] == "stacked" else "split", seed=0)
        else:
            export_vision(model, *make_inputs(Grid.parse(parts["grid"]), spec, 0).args, path,
                          wrapper=parts["wrapper"], exporter=parts["exporter"])
        first = first or path
    except Exception:  # a failing export (dynamo) is part of the work: its attempt was timed
        continue
t4 = time.perf_counter()
inputs = make_inputs(grid, spec, 0)
run_pooled(ort_session(first), *inputs.args)
t5 = time.perf_counter()
for role, path in (("golden", golden), ("modified", modified)):  # the DeepStack gate of each file
    measure_gate(condition_of(path), modules[role])
t6 = time.perf_counter()
whole = build_full_model(modules["golden"], spec, pair.golden, 0)  # the pipeline claims' golden forward
ids = make_prompt(image_counts(inputs.grid_thw, spec.merge_size), whole.config, 0)
golden_run(whole, ids, *inputs.args)
t7 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "forward": t3 - t2, "exports": t4 - t3, "ort": t5 - t4,
                  "gate": t6 - t5, "pipeline": t7 - t6, "total": t7 - t0}))
"""


def descendants(root: int) -> list[int]:
    """The process and all its children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def peak_rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def run_suite(workers: str, config: str, grid: str, cache: Path) -> tuple[float, float, str]:
    """Wall seconds, the largest process's peak RSS (GB) and pytest's last line."""
    # The onnxruntime-genai claims have a benchmark of their own (benchmarks/genai.py).
    args = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "-n", workers,
            "-m", "not qwen3vl_genai", f"--qwen3vl-config={config}", f"--qwen3vl-grid={grid}",
            f"--qwen3vl-cache-dir={cache}"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"gb": 0.0}

    def sample() -> None:
        while proc.poll() is None:
            for pid in descendants(proc.pid):
                peak["gb"] = max(peak["gb"], peak_rss_gb(pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    sampler.join()
    last = [line for line in output.splitlines() if line.strip()][-1]
    return time.perf_counter() - start, peak["gb"], last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--grid", default="1,24,24")
    parser.add_argument("--workers", nargs="+", default=["1", "2"])
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; config {options.config}; grid {options.grid}")
    builds: list[dict[str, str]] = []
    results: dict[str, float] = {}
    warm: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in options.workers:
            cache = Path(folder) / f"cache-{workers}"
            seconds, peak, last = run_suite(workers, options.config, options.grid, cache)
            log = cache / "exports" / "builds.log"
            records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
            built = [r for r in records if r["status"] == "built"]
            print(f"-n {workers} cold: {seconds:.1f} s; exports built {len(built)}, failed "
                  f"{len(records) - len(built)} ({sum(r['seconds'] for r in records):.1f} s in exports); "
                  f"largest process peak RSS {peak:.2f} GB; pytest: {last}")
            warm_seconds, _, warm_last = run_suite(workers, options.config, options.grid, cache)
            after = len(log.read_text().splitlines()) if log.is_file() else 0
            print(f"-n {workers} warm: {warm_seconds:.1f} s; exports attempted {after - len(records)}; "
                  f"pytest: {warm_last}")
            builds = builds or [r["parts"] for r in records]
            results[workers] = seconds
            warm[workers] = warm_seconds
        necessary = json.loads(subprocess.run(
            [sys.executable, "-c", NECESSARY, options.config, options.grid, folder, json.dumps(builds)],
            cwd=REPO, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print("necessary work: " + ", ".join(f"{k} {v:.1f} s" for k, v in necessary.items()))
    without_exports = necessary["total"] - necessary["exports"]
    for workers, seconds in results.items():
        print(f"ratio cold suite (-n {workers}) / necessary work: {seconds / necessary['total']:.2f} "
              f"(aim at -n 2: <= 1.6)")
        print(f"ratio warm suite (-n {workers}) / necessary work without exports: "
              f"{warm[workers] / without_exports:.2f} (aim: <= 1.3)")
    if len(results) > 1:
        ordered = [results[w] for w in options.workers]
        print(f"ratio -n {options.workers[0]} / -n {options.workers[-1]}: {ordered[0] / ordered[-1]:.2f}")


if __name__ == "__main__":
    main()
