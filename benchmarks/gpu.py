"""The artefact check of one file on each of ONNX Runtime's GPU providers present, at fp32 and fp16.

For a machine with a GPU and ``onnxruntime-gpu``: judges the file against golden on the sweep on
``onnxruntime-cuda`` at fp32 and fp16 (the CUDA provider has no fp16 switch: fp16 runs a copy of the file
converted to fp16, kept in the cache) and ``onnxruntime-tensorrt`` at fp32 and fp16, and prints grids
served, the worst
relative L2 of the grids that ran, and seconds (session load and runs; golden's outputs are computed
first). Without a GPU provider it prints which are absent and exits 0.

    python benchmarks/gpu.py                          # a tiny grid-free file, exported here
    python benchmarks/gpu.py vision.onnx --config 4b  # your file, against golden at its config and seed
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pytest_qwen3vl.runtimes.registry import RuntimeChoice

RUNS = (RuntimeChoice("onnxruntime-cuda"), RuntimeChoice("onnxruntime-cuda", "fp16"),
        RuntimeChoice("onnxruntime-tensorrt"), RuntimeChoice("onnxruntime-tensorrt", "fp16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, help="the ONNX file (default: a tiny grid-free file)")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    absent = {choice.text: choice.missing() for choice in RUNS}
    present = [choice for choice in RUNS if absent[choice.text] is None]
    if not present:
        reasons = sorted({reason for reason in absent.values() if reason})
        print(f"no GPU runtime here: {', '.join(absent)} absent: {'; '.join(reasons)}")
        return
    for text, reason in absent.items():
        if reason:
            print(f"{text}: not run: {reason}")
    with tempfile.TemporaryDirectory(prefix="qwen3vl-gpu-") as folder:
        table(args.file, args.config, args.seed, present, Path(folder))


def table(file: Path | None, config: str, seed: int, present: list[RuntimeChoice], folder: Path) -> None:
    """One line per runtime: the sweep's findings on it, timed after golden's outputs are computed."""
    from pytest_qwen3vl.errors import NotRunnable
    from pytest_qwen3vl.export.recipes import export_recipe
    from pytest_qwen3vl.judge.finding import REFUSED, served_line
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.judge.sweep import sweep
    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.grids import DEFAULT_GRID, SWEEP
    from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path

    golden_path = installed_golden_path()
    spec = resolve_config(config, golden_path.parent)
    model = build_golden(import_modeling_file(golden_path, "golden"), spec, seed)
    path = file or export_recipe(model, "grid-free", folder / "grid-free.onnx", grid=DEFAULT_GRID).path
    golden = GoldenRuns(model, spec, seed)
    for grid in SWEEP:
        golden.outputs(grid)
    print(f"{path.name} against golden ({spec.name}, seed {seed}) on {len(SWEEP)} grids")
    print(f"{'runtime':<28} {'served':>8} {'worst rel L2':>13} {'seconds':>8}")
    for choice in present:
        started = time.perf_counter()
        try:
            findings = sweep(path, choice.make(folder / "cache"), golden, SWEEP)
        except NotRunnable as exc:
            print(f"{choice.text:<28} {exc}")
            continue
        seconds = time.perf_counter() - started
        ran = [f.worst_rel_l2() for f in findings if f.status != REFUSED]
        served = sum(f.served for f in findings)
        worst = f"{max(ran):.2g}" if ran else "-"
        print(f"{findings[0].runtime:<28} {f'{served} of {len(findings)}':>8} {worst:>13} {seconds:>8.1f}")
        if served < len(findings):
            print(f"  {served_line(findings)[1]}")


if __name__ == "__main__":
    main()
