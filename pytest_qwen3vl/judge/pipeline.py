"""The pipeline claims' measurement: golden's whole model fed the exported files' outputs, on every
grid of the session, with the whole model built once.

A released size's whole model is several GB (the 4B's language model alone is 8 GB in bfloat16):
two xdist workers each holding one killed both on a 24 GiB machine. So the caller keeps this
measurement in the cache (the first worker makes it under the key's lock, the others wait and read
it, later runs only read it), and a model of ``BF16_FROM_PARAMS`` parameters or more is built in a
child process, which exits with its memory: the worker's own exports and sessions never sit beside
it. The ONNX files run first, one session at a time, so no session is open while the model exists.

``python -m pytest_qwen3vl.judge.pipeline REQUEST RESULT`` is the child.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError, run_module

if TYPE_CHECKING:
    import torch

DEEPSTACK, POOLED = "deepstack", "pooled"  # golden's export with every DeepStack output; the modified file's


@dataclasses.dataclass(frozen=True)
class Request:
    """What the measurement needs, as text a child process reads: the golden file, the config (a
    preset name or an absolute path, as ``ModelSpec.name``), the seed, and per grid the two files
    (``DEEPSTACK``, ``POOLED``; None where the file could not be made, so no test reads that gap)."""

    golden: str
    config: str
    seed: int
    files: dict[str, dict[str, str | None]]


def measure(request: Request, vision: torch.nn.Module | None = None) -> dict[str, Any]:
    """Per grid text: the prompt's text, the language model's tolerance, and per file the number of
    DeepStack outputs and the ``PipelineGap`` fields (None for a file that could not be made).
    ``vision``: the session's golden vision model, when measured in its process (else built here,
    from the same config and seed). ``ConfigError`` for a config that gives no whole model."""
    import gc

    from pytest_qwen3vl.model import pipeline as pl
    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.grids import Grid
    from pytest_qwen3vl.model.inputs import make_inputs
    from pytest_qwen3vl.onnxfile.names import split_outputs
    from pytest_qwen3vl.runtimes.onnxruntime import LOW_MEMORY, ort_session, run_outputs
    from pytest_qwen3vl.source.files import import_modeling_file

    spec = resolve_config(request.config, Path.cwd())
    module = import_modeling_file(Path(request.golden), "golden")
    inputs = {text: make_inputs(Grid.parse(text), spec, request.seed) for text in request.files}
    outputs: dict[str, dict[str, tuple[Any, list[Any]] | None]] = {}
    for text, files in request.files.items():
        outputs[text] = {}
        for role, path in files.items():
            if path is None:
                outputs[text][role] = None
                continue
            session = ort_session(path, config=LOW_MEMORY)
            outputs[text][role] = split_outputs(run_outputs(session, *inputs[text].args))
            del session
    gc.collect()
    tower = vision if vision is not None else build_golden(module, spec, request.seed)
    model = pl.build_full_model(module, spec, tower, request.seed)
    tolerance = pl.tolerance(model)
    dtype = str(model.lm_head.weight.dtype).removeprefix("torch.")
    if spec.checkpoint is None:
        weights = "random weights: the numbers show the mechanism, not a real model's accuracy"
    else:
        weights = f"weights of {spec.checkpoint.name}"
    measured: dict[str, Any] = {}
    for text, args in inputs.items():
        counts = pl.image_counts(args.grid_thw, spec.merge_size)
        ids = pl.make_prompt(counts, model.config, request.seed)
        golden = pl.golden_run(model, ids, *args.args)
        gaps: dict[str, Any] = {}
        for role, found in outputs[text].items():
            if found is None:
                gaps[role] = None
                continue
            pooled, deepstack = found
            fed = deepstack if role == DEEPSTACK else deepstack or None  # the pooled-only runtime feeds none
            run = pl.language_run(model, ids, args.grid_thw, pooled, fed)
            gap = pl.pipeline_gap(run, golden, ids, model.config.image_token_id)
            gaps[role] = {"deepstack_outputs": len(deepstack), **dataclasses.asdict(gap)}
        measured[text] = {
            "prompt": f"{ids.shape[1]} tokens, {sum(counts)} image tokens; {weights}, language model in {dtype}",
            "tolerance": tolerance,
            "gaps": gaps,
        }
    return measured


def plan(request: Request, available: int | None = None) -> bool:
    """Whether the whole model is made in a child process (``BF16_FROM_PARAMS`` parameters or more).
    ``NotRunnable`` when the whole model cannot fit this machine's memory (``available``: the physical
    memory) by ``model.pipeline.whole_model_size``."""
    from pytest_qwen3vl.errors import NotRunnable
    from pytest_qwen3vl.model import pipeline as pl
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.grids import physical_memory
    from pytest_qwen3vl.source.files import import_modeling_file

    golden = import_modeling_file(Path(request.golden), "golden")
    size = pl.whole_model_size(golden, resolve_config(request.config, Path.cwd()))
    have = available if available is not None else physical_memory()
    if size.need > have:
        raise NotRunnable(f"not run: {size.text()}; this machine has {have / 2**30:.1f} GiB")
    return size.parameters >= pl.BF16_FROM_PARAMS


def measure_in_child(request: Request) -> dict[str, Any]:
    """``measure`` in a child process; ``ConfigError`` as ``measure`` raises it, ``ProbeFailed`` when
    the child fails otherwise (our fault, never a verdict)."""
    with tempfile.TemporaryDirectory(prefix="qwen3vl-pipeline-") as tmp:
        asked, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        asked.write_text(json.dumps(dataclasses.asdict(request)), encoding="utf-8")
        run_module(__name__, str(asked), str(result), what="the whole-model process", result=result)
        answer: Mapping[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    if "config_error" in answer:
        raise ConfigError(answer["config_error"])
    return dict(answer["grids"])


def main(argv: list[str] | None = None) -> None:
    """The child: reads REQUEST, writes RESULT (``{"grids": ...}`` or ``{"config_error": ...}``)."""
    import torch

    from pytest_qwen3vl.runtimes.onnxruntime import default_threads

    asked, result = (Path(a) for a in (argv or sys.argv[1:]))
    torch.set_num_threads(default_threads())
    try:
        answer: dict[str, Any] = {"grids": measure(Request(**json.loads(asked.read_text(encoding="utf-8"))))}
    except ConfigError as exc:
        answer = {"config_error": str(exc)}
    result.write_text(json.dumps(answer), encoding="utf-8")


if __name__ == "__main__":
    main()
