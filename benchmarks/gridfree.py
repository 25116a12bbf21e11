"""ONNX Runtime at 1x24x24: the grid-free file over the report recipe's file traced at 1x24x24.

Both files are exported from the same model in this run, then run interleaved on the same inputs;
prints each median and the ratio (aim at 4b: 1.2 or less).
Usage: python benchmarks/gridfree.py [--config tiny|4b|...] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pytest_qwen3vl.export.recipes import export_recipe
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import DEFAULT_GRID
from pytest_qwen3vl.model.inputs import trace_inputs
from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_outputs
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    spec = resolve_config(args.config, Path.cwd())
    model = build_golden(import_modeling_file(installed_golden_path(), "golden"), spec, 0)
    inputs = trace_inputs(model, DEFAULT_GRID, 1)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {}
        for recipe in ("grid-free", "report"):
            result = export_recipe(model, recipe, Path(folder) / f"{recipe}.onnx", grid=DEFAULT_GRID)
            print(f"{recipe}: exported in {result.seconds:.1f} s")
            sessions[recipe] = ort_session(result.path)
        times: dict[str, list[float]] = {recipe: [] for recipe in sessions}
        for run in range(args.runs + 3):  # three warm-up rounds
            for recipe, session in sessions.items():
                started = time.perf_counter()
                run_outputs(session, *inputs)
                if run >= 3:
                    times[recipe].append(time.perf_counter() - started)
    medians = {recipe: statistics.median(values) for recipe, values in times.items()}
    for recipe, value in medians.items():
        print(f"{recipe}: {value * 1e3:.1f} ms (median of {args.runs}, {spec.name}, {DEFAULT_GRID.id})")
    print(f"ratio grid-free / report: {medians['grid-free'] / medians['report']:.2f} (aim at 4b: <= 1.2)")


if __name__ == "__main__":
    main()
