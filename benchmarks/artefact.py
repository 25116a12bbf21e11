"""Checking one ONNX file on the sweep: peak memory and wall time over the work it cannot avoid.

One run, three child processes, each measured from outside (wall clock, and the peak RSS of the
largest process it ran):
1. export: the builder-style export of the config's vision tower at 1x24x24 (not measured);
2. check: ``pytest conformance/test_artefact.py --qwen3vl-onnx=FILE --qwen3vl-grid=sweep -n 0``, and
   with ``--workers N`` the same with ``-n N`` (a fresh cache each);
3. bare work: in one process, one golden PyTorch vision model and one ONNX Runtime session on the
   file, a forward and a run per sweep grid: what any check must pay.
Prints check / bare for peak RSS (aim 1.25; 1.3 with ``--other-weights``) and wall time (aim 1.5;
2.2 with ``--other-weights``), and ``-n N`` / ``-n 0`` for wall time (aim: at most 1).

    python benchmarks/artefact.py                              # tiny
    python benchmarks/artefact.py --config 4b --workers 2      # 4B dimensions, random weights: ~10 GB, minutes
    python benchmarks/artefact.py --config 4b --other-weights  # a file of other weights (seed + 1):
                                                               # its graph is judged with them swapped in

Weights are random (preset and ``--seed``): there is no vision-only checkpoint writer yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPORT = r"""
import sys
from pathlib import Path
from pytest_qwen3vl.export.builder import export_vision
from pytest_qwen3vl.model.build import build_pair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path, write_reference_modified
config, seed, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
golden = installed_golden_path()
spec = resolve_config(config, golden.parent)
pair = build_pair(import_modeling_file(golden, "golden"),
                  import_modeling_file(write_reference_modified(golden, out.parent / "src"), "modified"), spec, seed)
export_vision(pair.modified, *make_inputs(Grid.parse("1,24,24"), spec, seed).args, out)
"""

BARE = r"""
import sys, torch

from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, ort_session
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import SWEEP
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
config, seed, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
golden = installed_golden_path()
spec = resolve_config(config, golden.parent)
model = build_golden(import_modeling_file(golden, "golden"), spec, seed)
session = ort_session(path, config=LOW_MEMORY)
names = [i.name for i in session.get_inputs()]
for grid in SWEEP:
    x = make_inputs(grid, spec, seed)
    with torch.inference_mode():
        model(*x.args)
    try:
        session.run(None, dict(zip(names, (x.pixel_values.numpy(), x.grid_thw.numpy()))))
    except Exception:
        pass  # a grid the file does not serve costs what it costs
"""

# Runs a command and prints the peak RSS (KiB) of its largest process: ru_maxrss over waited children.
MEASURE = r"""
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout.strip().splitlines()
print("last:", out[-1] if out else "-")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measured(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) of the largest process of ``argv``, and its last line of output."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True)
    last, peak = out.stdout.strip().splitlines()[-2:]
    return time.perf_counter() - started, int(peak) / 1024**2, last.removeprefix("last: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="also check with -n WORKERS")
    parser.add_argument("--other-weights", action="store_true", help="export from seed + 1, check against seed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwen3vl-artefact-") as folder:
        path = Path(folder) / "vision.onnx"
        ini = Path(folder) / "pytest.ini"
        ini.write_text("[pytest]\n")  # the repo's own ini (testpaths, grid) must not apply
        started = time.perf_counter()
        made_from = args.seed + 1 if args.other_weights else args.seed
        subprocess.run([sys.executable, "-c", EXPORT, args.config, str(made_from), str(path)], check=True,
                       capture_output=True)
        size = sum(p.stat().st_size for p in path.parent.glob("vision.onnx*")) / 1e9
        print(f"config {args.config}, file made from seed {made_from}, checked against seed {args.seed}: "
              f"export {time.perf_counter() - started:.1f} s, {size:.2f} GB")
        checks: dict[int, tuple[float, float]] = {}
        for workers in dict.fromkeys((0, args.workers)):
            check_s, check_gb, summary = measured([
                sys.executable, "-m", "pytest", str(REPO / "conformance" / "test_artefact.py"), "-q",
                "-n", str(workers), "-p", "no:cacheprovider", f"--qwen3vl-onnx={path}",
                f"--qwen3vl-config={args.config}", f"--qwen3vl-seed={args.seed}", "--qwen3vl-grid=sweep",
                f"--qwen3vl-cache-dir={folder}/cache-{workers}", "--rootdir", folder, "-c", str(ini),
            ])
            checks[workers] = check_s, check_gb
            print(f"check on the sweep, -n {workers}: {check_s:.1f} s, largest process {check_gb:.2f} GB "
                  f"(pytest: {summary})", flush=True)
        bare_s, bare_gb, _ = measured([sys.executable, "-c", BARE, args.config, str(args.seed), str(path)])
    check_s, check_gb = checks[0]
    result = {"check_s": round(check_s, 1), "check_peak_gb": round(check_gb, 2), "bare_s": round(bare_s, 1),
              "bare_peak_gb": round(bare_gb, 2)}
    print(json.dumps(result))
    time_aim, peak_aim = (2.2, 1.3) if args.other_weights else (1.5, 1.25)
    print(f"bare work (one PyTorch model + one ORT session, 9 forwards + 9 runs): {bare_s:.1f} s, {bare_gb:.2f} GB")
    print(f"ratio peak RSS check / bare: {check_gb / bare_gb:.2f} (aim: <= {peak_aim})")
    print(f"ratio wall time check / bare: {check_s / bare_s:.2f} (aim: <= {time_aim})")
    if args.workers:
        print(f"ratio wall time -n {args.workers} / -n 0: {checks[args.workers][0] / check_s:.2f} (aim: <= 1)")


if __name__ == "__main__":
    main()
