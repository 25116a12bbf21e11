"""Whether two transformers versions compute the same vision tower and export the same graphs.

Before a version joins ``source/goldens.VERIFIED`` while its vision definitions differ from a verified
one's, this measures that the differences do not reach what the claims compute. Run ``measure OUT`` in
each version's environment (same torch and onnx), then ``compare A B`` in either:

    python tools/vision_across_versions.py measure /tmp/v523   # under transformers 5.23.0
    python tools/vision_across_versions.py measure /tmp/v525   # under transformers 5.25.0
    python tools/vision_across_versions.py compare /tmp/v523 /tmp/v525

``measure`` builds golden's tiny vision tower (seed 0), runs it on every sweep grid with autograd off
and on (the two must agree: the ``@torch.no_grad()`` decorators some releases drop only matter there),
and exports it at 1x24x24 with the pooled and the all-outputs wrappers; ``compare`` says whether the
merged embeddings, every DeepStack feature and both graph digests are equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pytest_qwen3vl.export.builder import export_vision
from pytest_qwen3vl.model.build import build_golden
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import DEFAULT_GRID, SWEEP
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.model.outputs import deepstack, merged
from pytest_qwen3vl.onnxfile.signature import graph_digest
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
from pytest_qwen3vl.versions import transformers_version

WRAPPERS = ("pooled", "all")


def measure(out: Path) -> tuple[bool, str]:
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve_config("tiny", out)
    model = build_golden(import_modeling_file(installed_golden_path(), "golden"), spec, 0)
    tensors: dict[str, list[torch.Tensor]] = {}
    for grid in SWEEP:
        inputs = make_inputs(grid, spec, 0)
        with torch.no_grad():
            quiet = model(*inputs.args)
        graded = model(*inputs.args)
        values = [merged(quiet), *deepstack(quiet)]
        again = [merged(graded), *deepstack(graded)]
        if len(again) != len(values) or not all(torch.equal(a, b.detach()) for a, b in zip(values, again, strict=True)):
            return False, f"{grid.id}: the forward differs with autograd on"
        tensors[grid.id] = values
    torch.save(tensors, out / "outputs.pt")
    digests = {}
    for wrapper in WRAPPERS:
        path = out / f"{wrapper}.onnx"
        export_vision(model, *make_inputs(DEFAULT_GRID, spec, 0).args, path, wrapper=wrapper)
        digests[wrapper] = graph_digest(path)
    summary = {"transformers": transformers_version(), "torch": torch.__version__, "digests": digests}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return True, f"{out}: {len(tensors)} grids, autograd on and off equal; {json.dumps(summary)}"


def compare(first: Path, second: Path) -> tuple[bool, str]:
    a, b = (torch.load(folder / "outputs.pt") for folder in (first, second))
    sa, sb = (json.loads((folder / "summary.json").read_text(encoding="utf-8")) for folder in (first, second))
    versions = f"transformers {sa['transformers']} and {sb['transformers']}"
    unequal = [grid for grid in a if len(a[grid]) != len(b.get(grid, ()))
               or not all(torch.equal(x, y) for x, y in zip(a[grid], b[grid], strict=True))]
    count = sum(len(values) for values in a.values())
    outputs = f"differ on {', '.join(unequal)}" if unequal else f"{count} tensors on {len(a)} grids bitwise equal"
    same = [sa["digests"][w] == sb["digests"][w] for w in WRAPPERS]
    graphs = ", ".join(f"{w} {'equal' if equal else 'differ'}" for w, equal in zip(WRAPPERS, same, strict=True))
    return not unequal and all(same), f"{versions}: outputs {outputs}; graph digests: {graphs}"


def main(argv: list[str]) -> int:
    """0 when the measurement holds (equal), 1 when it does not, 2 for bad arguments."""
    if (len(argv) == 2 and argv[0] == "measure") or (len(argv) == 3 and argv[0] == "compare"):
        ok, line = measure(Path(argv[1])) if argv[0] == "measure" else compare(Path(argv[1]), Path(argv[2]))
        print(line)
        return 0 if ok else 1
    print("usage: vision_across_versions.py measure OUT | compare A B", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
