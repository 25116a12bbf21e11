"""Console scripts. ``qwen3vl-diff`` checks a fork's modeling file on every commit, without torch;
``qwen3vl-export`` exports the vision encoder with one of the recipes of ``export/recipes.py``;
``qwen3vl-checkpoint`` writes an offline checkpoint folder; ``qwen3vl-genai`` turns a checkpoint into
an onnxruntime-genai model folder.

``qwen3vl-diff`` exit codes: 0 the file is golden plus exactly the report's DeepStack condition,
1 anything else, 2 the files could not be compared (missing file, syntax error). The others exit 0
on success and 2, with one line on stderr, on bad input or a failed export.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pytest_qwen3vl.errors import ConfigError, Qwen3VLError, SourceError
from pytest_qwen3vl.source.diff import Change, DiffReport, check_one_diff
from pytest_qwen3vl.source.files import GoldenFile, check_golden, default_golden
from pytest_qwen3vl.source.fingerprints import fork_mismatch

if TYPE_CHECKING:
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@$")


def _unified(change: Change, golden: str, modified: str) -> Iterator[str]:
    """The change as a unified diff whose headers and hunk ranges carry the files' own line numbers."""
    g_start, m_start = change.golden_line, change.modified_line
    lines = difflib.unified_diff(
        change.golden_source.splitlines(),
        change.modified_source.splitlines(),
        f"{golden}:{g_start}" if g_start else f"{golden} (absent)",
        f"{modified}:{m_start}" if m_start else f"{modified} (absent)",
        lineterm="",
    )
    for line in lines:
        hunk = _HUNK.match(line)
        if hunk:
            g = int(hunk[1]) + (g_start - 1 if g_start else 0)
            m = int(hunk[3]) + (m_start - 1 if m_start else 0)
            line = f"@@ -{g}{hunk[2] or ''} +{m}{hunk[4] or ''} @@"
        yield line


def render(report: DiffReport) -> str:
    """Changes grouped by place, each as a unified diff, then the problems and the verdict line."""
    out: list[str] = []
    places = dict.fromkeys(c.place for c in report.changes)
    for place in places:
        out.append(f"== {place} ==")
        for change in (c for c in report.changes if c.place == place):
            out.append(f"{change.kind}{': ' + change.note if change.note else ''}")
            out.extend(_unified(change, report.golden, report.modified))
            out.append("")
    out.extend(f"problem: {p}" for p in report.problems)
    out.append(report.verdict)
    return "\n".join(out)


def _golden_check(path: Path) -> tuple[GoldenFile | None, str | None]:
    """The golden file's version, and a warning line when it is not a verified one: the verdict means less."""
    try:
        golden = check_golden(path)
    except SourceError as exc:
        return None, f"warning: {exc}"
    return golden, None if golden.verified else f"warning: golden is {golden.label}"


def diff_main(argv: Sequence[str] | None = None) -> int:
    """``qwen3vl-diff [--golden PATH] [--json] MODIFIED``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="qwen3vl-diff",
        description="Check that MODIFIED is the golden modeling_qwen3_vl.py plus exactly the DeepStack "
        "export condition. Exit 0: yes; 1: no; 2: could not compare.",
    )
    parser.add_argument("modified", metavar="MODIFIED", type=Path, help="the modified modeling file")
    parser.add_argument("--golden", type=Path, help="the golden file (default: the installed transformers' file)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        golden = args.golden or default_golden(args.modified)
        report = check_one_diff(golden, args.modified)
    except SourceError as exc:
        print(exc, file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc)}))
        return 2
    known, warning = _golden_check(golden)
    if warning:
        print(warning, file=sys.stderr)
    mismatch = fork_mismatch(args.modified, golden, known.version, known.family) if known else None
    if mismatch:
        line = f"FAIL: {args.modified} was {mismatch}"
        print(json.dumps({"error": line, "conforms": False}) if args.json else line)
        return 1
    if args.json:
        print(json.dumps(report.to_dict() | {"warnings": [warning] if warning else []}, indent=2))
    else:
        print(render(report))
    return 0 if report.conforms else 1


def _progress_of(prog: str) -> Callable[[str], None]:
    """Progress lines on stderr, each naming the command, so they stay apart from the written files."""

    def progress(message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)

    return progress


def checkpoint_main(argv: Sequence[str] | None = None) -> int:
    """``qwen3vl-checkpoint --config tiny|2b|4b|8b --seed N [--vision-only] OUT_DIR``; returns the exit code."""
    from pytest_qwen3vl.model.configs import VISION_PRESETS

    parser = _OneLineParser(
        prog="qwen3vl-checkpoint",
        description="Write a Qwen3-VL checkpoint folder laid out as a released one (config.json, "
        "model.safetensors, tokenizer, preprocessor_config.json) from a preset and a seed, offline. "
        "Its vision weights are the ones the plugin draws for the same --qwen3vl-config and --qwen3vl-seed.",
    )
    parser.add_argument("out", metavar="OUT_DIR", type=Path, help="folder to write (absent or empty)")
    parser.add_argument("--config", default="tiny", choices=list(VISION_PRESETS), help="preset (default tiny)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the weights, 0 to 2**32-1 (default 0)")
    parser.add_argument("--vision-only", action="store_true", help="write only the vision tower's tensors")
    args = parser.parse_args(argv)
    from pytest_qwen3vl.model.write_checkpoint import write_checkpoint

    try:
        write_checkpoint(args.out, args.config, args.seed, vision_only=args.vision_only,
                         progress=_progress_of("qwen3vl-checkpoint"))
    except Qwen3VLError as exc:
        print(f"qwen3vl-checkpoint: {exc}", file=sys.stderr)
        return 2
    return 0


def genai_main(argv: Sequence[str] | None = None) -> int:
    """``qwen3vl-genai CHECKPOINT -o FOLDER [--vision FILE.onnx | --grid T,H,W]``; returns the exit code."""
    from pytest_qwen3vl.model.grids import DEFAULT_GRID, Grid

    parser = _OneLineParser(
        prog="qwen3vl-genai",
        description="Make an onnxruntime-genai model folder from a checkpoint folder: the text decoder by "
        "genai's own builder (fp32, CPU, embeddings excluded), the vision file, an embedding model, "
        "genai_config.json and processor_config.json. Needs pip install pytest-qwen3vl[genai].",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="checkpoint folder (qwen3vl-checkpoint)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="genai folder to write (absent or empty)")
    parser.add_argument("--vision", type=Path, help="your vision ONNX file (default: export the checkpoint's)")
    parser.add_argument("--grid", default=DEFAULT_GRID.text,
                        help=f"grid T,H,W of the vision export without --vision (default {DEFAULT_GRID.text})")
    args = parser.parse_args(argv)
    from pytest_qwen3vl.runtimes.genai_folder import make_genai_folder

    try:
        grid = Grid.parse(args.grid)
        make_genai_folder(args.checkpoint, args.output, vision=args.vision, grid=grid,
                          progress=_progress_of("qwen3vl-genai"))
    except Qwen3VLError as exc:
        print(f"qwen3vl-genai: {exc}", file=sys.stderr)
        return 2
    return 0


def _seed(text: str) -> int:
    """``--seed``: the rule of every entry point (``model.inputs.check_seed``), as argparse's one-line error."""
    from pytest_qwen3vl.model.inputs import check_seed

    try:
        return check_seed(text)
    except Qwen3VLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _opset(text: str) -> int:
    """``--opset``: an opset the installed onnx knows and the exporters take (from 14, scaled dot-product
    attention's lowering); an out-of-range one otherwise fails deep in the exporter with a graph dump."""
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    try:
        opset = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if not 14 <= opset <= newest:
        raise argparse.ArgumentTypeError(f"{opset}: must be from 14 to {newest} (the installed onnx's newest)")
    return opset


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``prog: error: ...``), exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _export_parser() -> argparse.ArgumentParser:
    from pytest_qwen3vl.export.builder import DEFAULT_OPSET, EXPORTER_NAMES
    from pytest_qwen3vl.export.recipes import LAYOUTS, RECIPE_NAMES
    from pytest_qwen3vl.model.configs import VISION_PRESETS
    from pytest_qwen3vl.model.grids import DEFAULT_GRID

    parser = _OneLineParser(
        prog="qwen3vl-export",
        description="Export the Qwen3-VL vision encoder to ONNX. Recipes: report (the report's builder "
        "export, serves only the grid it was traced at), grid-free (one file for every grid), deepstack "
        "(grid-free, and golden's DeepStack tensors as outputs). See docs/export.md.",
    )
    parser.add_argument("--config", required=True,
                        help=f"{'|'.join(VISION_PRESETS)} (random weights), a checkpoint folder or a config.json")
    parser.add_argument("--modified", type=Path, help="a modified modeling_qwen3_vl.py (default: golden's)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of random weights and trace inputs, 0 to 2**32-1")
    parser.add_argument("--recipe", required=True, choices=RECIPE_NAMES)
    parser.add_argument("--layout", choices=LAYOUTS,
                        help="deepstack only: one output per layer (split, the default) or one [D, N, H] (stacked)")
    parser.add_argument("--grid", default=DEFAULT_GRID.text, help="T,H,W the export is traced at")
    parser.add_argument("--opset", type=_opset, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--exporter", choices=EXPORTER_NAMES, default="torchscript")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the .onnx file to write")
    return parser


def export_main(argv: Sequence[str] | None = None) -> int:
    """``qwen3vl-export --config NAME|PATH --recipe NAME -o OUT.onnx``; returns the exit code."""
    parser = _export_parser()
    args = parser.parse_args(argv)
    if args.layout is not None and args.recipe != "deepstack":
        parser.error(f"--layout applies to --recipe deepstack only, not {args.recipe}")
    try:
        return _export(args)
    except Qwen3VLError as exc:  # bad config, grid or modeling file, or a failed export: one line each
        print(f"qwen3vl-export: {exc}", file=sys.stderr)
    return 2


def _export(args: argparse.Namespace) -> int:
    """Resolve the inputs (all checked before torch is imported), build the model, export it."""
    from pytest_qwen3vl.model.configs import other_family, resolve_config, weights_origin
    from pytest_qwen3vl.model.grids import Grid

    try:
        spec = resolve_config(args.config, Path.cwd())
    except ConfigError as exc:
        raise ConfigError(f"--config={args.config!r}: {exc}") from None
    grid = Grid.parse(args.grid)
    grid.check_merge(spec.merge_size)
    grid.check_memory(int(spec.vision.get("num_heads", 16)))
    if args.modified is not None and not args.modified.is_file():
        raise SourceError(f"--modified: {args.modified} does not exist")
    if not args.output.parent.is_dir():
        raise SourceError(f"-o: folder {args.output.parent} does not exist")
    if args.output.is_dir():
        raise SourceError(f"-o: {args.output} is a folder; name the .onnx file to write")
    if not os.access(args.output.parent, os.W_OK):
        raise SourceError(f"-o: folder {args.output.parent} is not writable")
    golden = default_golden(args.modified)  # the installed file of the modified file's family
    check_golden(golden)
    if why := other_family(spec, golden, f"--config={args.config!r}", "--modified"):
        raise ConfigError(why)

    _progress = _progress_of("qwen3vl-export")
    started = time.perf_counter()
    role = "modified" if args.modified else "golden"
    _progress(f"building the {spec.name} vision model ({role}: {args.modified or golden}; "
              f"weights: {weights_origin(spec, args.seed)})")
    model = _build(spec, golden, args.modified, args.seed)
    _progress(f"built in {time.perf_counter() - started:.1f} s")

    from pytest_qwen3vl.export.builder import quiet_logging
    from pytest_qwen3vl.export.recipes import RECIPES, export_recipe, serves

    _progress(f"exporting recipe {args.recipe} with {args.exporter}, opset {args.opset}, traced at {grid.id}")
    with quiet_logging():  # transformers' one-time config notices are not progress
        result = export_recipe(model, args.recipe, args.output, grid=grid, opset=args.opset,
                               layout=args.layout or "split", exporter=args.exporter, seed=args.seed)
    written = [p for p in (args.output, args.output.with_name(f"{args.output.name}.data")) if p.is_file()]
    size = sum(p.stat().st_size for p in written) / 1e6
    _progress(f"exported in {result.seconds:.1f} s; wrote {', '.join(map(str, written))} ({size:.1f} MB): "
              f"outputs {', '.join(result.requested_outputs)}")
    _progress(f"the file serves {serves(RECIPES[args.recipe], grid)}; done in {time.perf_counter() - started:.1f} s")
    return 0


def _build(spec: ModelSpec, golden: Path, modified: Path | None, seed: int) -> torch.nn.Module:
    """Golden's model, or the modified file's pointed at golden's weights (seeded, or the checkpoint's)."""
    from pytest_qwen3vl.model.build import build_golden, build_pair
    from pytest_qwen3vl.source.files import import_modeling_file

    golden_module = import_modeling_file(golden, "golden")
    if modified is None:
        return build_golden(golden_module, spec, seed)
    return build_pair(golden_module, import_modeling_file(modified, "modified"), spec, seed).modified


if __name__ == "__main__":
    sys.exit(diff_main())
