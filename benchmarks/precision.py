"""What reduced precision costs per grid: the eager model cast to bf16 and fp16 against the file on each runtime.

The eager model cast whole (``model.to(dtype)``) is the arithmetic's own cost at that precision; a
file on a runtime at the same precision that lands far above it computes something in low precision
that the model does not need to. Prints one markdown row per sweep grid: its patch count, the eager
costs, then the file's relative L2 of ``pooled_embeds`` against fp32 golden on each runtime ("refused"
where it does not run, "NaN/Inf" where its output holds one).

    python benchmarks/precision.py vision.onnx                       # openvino f32, bf16, f16; optimiser fp16
    python benchmarks/precision.py vision.onnx --runtime openvino:f16 --config 4b
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

DEFAULT_RUNTIMES = ("openvino:f32", "openvino:bf16", "openvino:f16", "onnxruntime-optimized:fp16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="the ONNX file (inputs pixel_values, image_grid_thw)")
    parser.add_argument("--runtime", action="append", help=f"NAME[:SETTING], repeatable (default {DEFAULT_RUNTIMES})")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwen3vl-precision-") as folder:
        table(args.file, args.config, args.seed, tuple(args.runtime or DEFAULT_RUNTIMES), Path(folder))


def table(file: Path, config: str, seed: int, runtimes: tuple[str, ...], cache: Path) -> None:
    import numpy as np
    import torch

    from pytest_qwen3vl.errors import RuntimeRefused
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.metrics import parity
    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.grids import SWEEP
    from pytest_qwen3vl.model.outputs import merged
    from pytest_qwen3vl.onnxfile.names import POOLED_OUTPUT
    from pytest_qwen3vl.runtimes.registry import parse_runtime
    from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path

    golden_path = installed_golden_path()
    spec = resolve_config(config, golden_path.parent)
    model = build_golden(import_modeling_file(golden_path, "golden"), spec, seed)
    golden = GoldenRuns(model, spec, seed)

    def distance(value: np.ndarray, grid: object) -> str:
        expected = golden.outputs(grid)[0]
        if value.shape != expected.shape:
            return f"shape {list(value.shape)}"
        return "NaN/Inf" if not np.isfinite(value).all() else f"{parity(value, expected).rel_l2:.2g}"

    columns: dict[str, list[str]] = {}
    for dtype in (torch.bfloat16, torch.float16):
        cast = copy.deepcopy(model).to(dtype)
        column = []
        for grid in SWEEP:
            pixels, thw = golden.inputs(grid)
            with torch.inference_mode():
                out = merged(cast(torch.from_numpy(pixels).to(dtype), torch.from_numpy(thw)))
            column.append(distance(out.float().numpy(), grid))
        columns[f"eager {str(dtype).removeprefix('torch.')}"] = column
        del cast
    for text in runtimes:
        runtime = parse_runtime(text).make(cache)
        column = []
        try:
            session = runtime.load(file)
        except RuntimeRefused:
            columns[runtime.label] = ["refused"] * len(SWEEP)
            continue
        for grid in SWEEP:
            pixels, thw = golden.inputs(grid)
            try:
                out = session.run({"pixel_values": pixels, "image_grid_thw": thw}, [POOLED_OUTPUT])[POOLED_OUTPUT]
            except RuntimeRefused:
                column.append("refused")
                continue
            column.append(distance(out, grid))
        columns[runtime.label] = column
        del session
    print("| grid (patches) | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for i, grid in enumerate(SWEEP):
        print(f"| {grid.id} ({grid.num_patches}) | " + " | ".join(column[i] for column in columns.values()) + " |")


if __name__ == "__main__":
    main()
