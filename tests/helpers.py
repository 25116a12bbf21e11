"""What the self-tests share: the one reader of the claims table, edits of the reference modified file,
the session's exports and the sweep of a file, and the kinds of damage done to a cache entry.

Test modules import from here, never from each other. The variants a wrong file is made of are data
modules beside this one (``tests/variants.py`` for the source diff, ``tests/model_variants.py`` for
the model claims).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import pytest
    import torch

    from pytest_qwen3vl.judge.finding import Finding
    from pytest_qwen3vl.model.build import VisionPair
    from pytest_qwen3vl.model.grids import Grid
    from pytest_qwen3vl.plugin.exports import SessionExports
    from pytest_qwen3vl.runtimes.base import Runtime

# The merger's last line in golden and the reference modified file: the edit several tests make wrong.
MERGER_LINE = "        x = self.linear_fc2(self.act_fn(self.linear_fc1(x)))\n"

_HEADER = re.compile(r"^\s*# claim\s+status\s+statement\s+measured$")
_ROW = re.compile(r"^\s*\d+ (\S+)\s")


# -- the claims table ---------------------------------------------------------------------------------

def _lines(output: pytest.RunResult | str) -> list[str]:
    return output.splitlines() if isinstance(output, str) else output.outlines


def claim_rows(output: pytest.RunResult | str) -> dict[str, str]:
    """Every row of the claims table by claim id: the row (``  7 claim-id  status  statement  measured``)
    with its continuation lines (the further measured values, aligned under the first) joined by `` | ``.

    ``output`` is an in-process run's result or a subprocess's stdout. Only the table is read: a claim
    id that appears in a failure message elsewhere is never taken for its row. Fails, showing the
    output's end, when the run printed no table.
    """
    lines = _lines(output)
    head = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    assert head is not None, "no claims table in the output:\n" + "\n".join(lines[-40:])
    indent = lines[head].index("measured")
    rows: dict[str, list[str]] = {}
    claim = None
    for line in lines[head + 1:]:
        if line.startswith("qwen3vl claims:"):  # the counts under the table
            break
        if row := _ROW.match(line):
            claim = row.group(1)
            rows[claim] = [line]
        elif claim is not None and line.startswith(" " * indent) and line[indent:indent + 1].strip():
            rows[claim].append(line)
        else:
            claim = None  # not the table's (a measured value's own line break): nothing more of this row
    return {claim: " | ".join(found) for claim, found in rows.items()}


def claim_row(output: pytest.RunResult | str, claim: str) -> str:
    """The claim's row of the claims table with its continuation lines (see ``claim_rows``)."""
    rows = claim_rows(output)
    assert claim in rows, f"no row for {claim!r} in the claims table: {sorted(rows)}"
    return rows[claim]


def claim_status(output: pytest.RunResult | str, claim: str) -> str:
    """The claim's status word as the table shows it (``holds``, ``fails``, ``not run``, ...)."""
    return _status(claim_row(output, claim))


def claim_statuses(output: pytest.RunResult | str) -> dict[str, str]:
    """Each claim of the table and its status."""
    return {claim: _status(row) for claim, row in claim_rows(output).items()}


def _status(row: str) -> str:
    words = row.split()
    return " ".join(words[2:4]) if words[2:4] == ["not", "run"] else words[2]


def glob_literal(text: str) -> str:
    """``text`` as an fnmatch pattern: brackets match themselves, ``*`` stays a wildcard."""
    return re.sub(r"[][]", lambda m: f"[{m.group()}]", text)


# -- modified files -----------------------------------------------------------------------------------

def modified_copy(tmp: Path, old: str, new: str, name: str = "modeling_qwen3_vl.py") -> Path:
    """The reference modified text with one more edit, written to ``tmp/name``."""
    from pytest_qwen3vl.source.files import installed_golden_path, reference_modified_text

    text = reference_modified_text(installed_golden_path().read_text(encoding="utf-8"))
    assert text.count(old) == 1, f"{old!r} must occur once in the golden text"
    path = tmp / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# -- exports and the sweep ----------------------------------------------------------------------------

def session_exports(pair: VisionPair, cache: Path) -> SessionExports:
    """What ``qwen3vl_export`` gives one process: the exports of ``cache`` and what was measured on them."""
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.plugin.exports import SessionExports
    from pytest_qwen3vl.source.files import installed_golden_path, write_reference_modified

    golden = installed_golden_path()
    sources = {"golden": golden, "modified": write_reference_modified(golden, cache)}
    models = {"golden": pair.golden, "modified": pair.modified}
    return SessionExports(models, sources, resolve_config("tiny", golden.parent), 0, cache / "exports")


def sweep_file(path: Path, golden: torch.nn.Module, grids: Sequence[Grid], seed: int = 0,
               runtime: Runtime | None = None) -> list[Finding]:
    """``judge.sweep.sweep`` of ``path`` on ``runtime`` (default ONNX Runtime's CPU) against ``golden``
    (the tiny config), one finding per grid: the one answer to which grids a file serves."""
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.judge.sweep import sweep
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.runtimes.onnxruntime import OnnxRuntimeCPU
    from pytest_qwen3vl.source.files import installed_golden_path

    spec = resolve_config("tiny", installed_golden_path().parent)
    return sweep(path, runtime or OnnxRuntimeCPU(), GoldenRuns(golden, spec, seed), grids)


def not_served(findings: Sequence[Finding]) -> list[Finding]:
    """The findings whose grid the file does not serve (wrong or refused)."""
    return [finding for finding in findings if not finding.served]


def line_of(findings: Sequence[Finding]) -> str:
    """``served_line``'s words alone, for assertion messages and substring checks."""
    from pytest_qwen3vl.judge.finding import served_line

    return served_line(findings)[1]


# -- small hand-built files -----------------------------------------------------------------------

def tiny_encoder(path: Path, outputs: Sequence[str] = ("pooled_embeds",), *, patches: int | None = None,
                 initializers: Sequence[onnx.TensorProto] = ()) -> Path:
    """An ONNX "vision encoder" in no time: ``pixel_values`` [n, 4] float32 and ``image_grid_thw`` [k, 3]
    int64 in, each of ``outputs`` the pixels as they came. With ``patches``, the pixels pass a Reshape
    to ``[patches, 4]`` (node ``the_reshape``) first, so a run on any other patch count is refused."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, source = [], list(initializers), "pixel_values"
    if patches is not None:
        weights.append(numpy_helper.from_array(np.array([patches, 4], dtype=np.int64), "fixed_shape"))
        nodes.append(helper.make_node("Reshape", ["pixel_values", "fixed_shape"], ["fixed"], name="the_reshape"))
        source = "fixed"
    nodes += [helper.make_node("Identity", [source], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["num_patches", 4]),
         helper.make_tensor_value_info("image_grid_thw", TensorProto.INT64, ["num_images", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["num_patches", 4]) for name in outputs],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


# A block's MLP output scaled past fp16's largest value (65504): about 3e5 in the residual stream, which
# the next LayerNorm brings back in fp32 and which is Inf in fp16 (measured on OpenVINO f16: all NaN/Inf).
OVERFLOW_SCALE = 1e6
OVERFLOW_TENSORS = ("model.visual.blocks.1.mlp.linear_fc2.weight", "model.visual.blocks.1.mlp.linear_fc2.bias")


def overflowing_checkpoint(out: Path) -> Path:
    """The tiny vision-only checkpoint (seed 0) with one block's MLP output scaled by OVERFLOW_SCALE: a
    correct file of it holds at fp32 and overflows wherever it runs in fp16."""
    from safetensors.torch import load_file, save_file

    from pytest_qwen3vl.model.write_checkpoint import write_checkpoint

    write_checkpoint(out, "tiny", 0, vision_only=True)
    weights = out / "model.safetensors"
    state = load_file(str(weights))
    for name in OVERFLOW_TENSORS:
        state[name] = state[name] * OVERFLOW_SCALE
    save_file(state, str(weights), metadata={"format": "pt"})
    return out


def released_name(name: str) -> str:
    """A Qwen3-Omni thinker tensor's name as released checkpoints spell it (transformers 5.x nests the
    towers and the text model under the thinker's ``model``)."""
    for inside, released in (("model.language_model.", "model."), ("model.visual.", "visual."),
                             ("model.audio_tower.", "audio_tower.")):
        if name.startswith(inside):
            return f"thinker.{released}{name.removeprefix(inside)}"
    return f"thinker.{name}"


def omni_checkpoint(folder: Path, seed: int) -> Path:
    """A Qwen3-Omni checkpoint folder laid out as the released ones are: config.json with the thinker's
    config under ``thinker_config``, and the thinker's tensors under ``thinker.`` in model.safetensors
    (the tiny family config with weights seeded from ``seed``; no talker)."""
    import json

    from safetensors.torch import save_file

    from pytest_qwen3vl.model.build import build_golden
    from pytest_qwen3vl.model.configs import resolve_config
    from pytest_qwen3vl.model.pipeline import build_full_model
    from pytest_qwen3vl.source.families import QWEN3_OMNI_MOE
    from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path

    spec = resolve_config("tiny", Path("."))
    golden = import_modeling_file(installed_golden_path(QWEN3_OMNI_MOE), "golden")
    thinker = build_full_model(golden, spec, build_golden(golden, spec, seed), seed)
    folder.mkdir(parents=True)
    tensors = {released_name(name): value.detach().clone().contiguous() for name, value in thinker.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": QWEN3_OMNI_MOE.name, "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
              "thinker_config": thinker.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# -- damage to a cache entry --------------------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def flip_a_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def delete_keep_folder(path: Path) -> None:
    path.unlink()


def lose_the_manifest(path: Path) -> None:
    (path.parent / "manifest.json").unlink()


def manifest_of_the_wrong_shape(path: Path) -> None:
    """Valid JSON that is no table of files."""
    (path.parent / "manifest.json").write_text('{"files": 5}')


def garbage(path: Path) -> None:
    """Bytes that are no text at all (not UTF-8), where a file of the cache was."""
    path.write_bytes(b"\xff\xfe\x00" + bytes(range(256)) * 4)


def lfs_pointer(path: Path) -> None:
    """Replace a weights file by what a clone without ``git lfs pull`` holds: a git-lfs pointer."""
    size = path.stat().st_size
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize {size}\n")


class Interrupted(Exception):
    """Raised from a progress callback: the command stops there, as under Ctrl-C or a full disk."""


def stop_at(step: str) -> Callable[[str], None]:
    """A progress callback that interrupts the command at the step whose message starts with ``step``."""

    def progress(message: str) -> None:
        if message.startswith(step):
            raise Interrupted(message)

    return progress


# The three predicates a DeepStack condition may read, measured under every way the gate runs a model.
def _probe_class() -> type[torch.nn.Module]:
    import torch

    class Probe(torch.nn.Module):
        """``2x + 1*tracing + 10*exporting + 100*compiling``: the three predicates as one number."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from transformers.utils import is_torchdynamo_compiling

            return (
                2 * x
                + 1 * int(torch.jit.is_tracing())
                + 10 * int(torch.compiler.is_exporting())
                + 100 * int(bool(is_torchdynamo_compiling()))
            )

    return Probe


def measure_predicates() -> dict[str, dict[str, bool]]:
    """``torch.jit.is_tracing()``, ``torch.compiler.is_exporting()`` and transformers'
    ``is_torchdynamo_compiling()`` inside a forward, per exporter, read back from each artefact."""
    import tempfile

    import torch

    from pytest_qwen3vl.judge.gate import EXPORTERS, added_by, run_under

    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out: dict[str, dict[str, bool]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for exporter in EXPORTERS:
            value = added_by(run_under(_probe_class()(), exporter, x, Path(folder)), x)
            out[exporter] = {"tracing": bool(value % 10), "exporting": bool(value // 10 % 10),
                             "compiling": bool(value // 100 % 10)}
    return out


def expected_predicates() -> dict[str, dict[str, bool]]:
    """What ``source.diff.MODES`` assumes each exporter sets (compared with ``measure_predicates``)."""
    from pytest_qwen3vl.judge.gate import EXPORTER_MODES
    from pytest_qwen3vl.source.diff import MODES

    return {exporter: MODES[mode] for exporter, mode in EXPORTER_MODES.items()}
