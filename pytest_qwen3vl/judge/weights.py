"""A file's weights against the checkpoint's, tensor by tensor: equal, the checkpoint's rounded to
bfloat16 or float16, the checkpoint's quantized (within one step of the file's own scales), or
other values that no rounding or quantization explains.

Each golden tensor is found by name (``state_key``), else by value among the file's tensors of its
shape (the dynamo exporter keeps one of several equal LayerNorm tensors under one name; a quantizer
renames what it quantizes), and an all-zero one with no match counts as dropped (optimizers drop
the Add of a zero bias). The file's weights are read in a child process (``compare_in_child``), so
they never sit beside the golden model in the check's own process; tensors cross between the two as
one ``.npy`` file each (``Stored``), read one at a time, so neither side holds a second copy of them
all. numpy and torch are imported inside the functions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import run_module
from pytest_qwen3vl.onnxfile.weights import state_key
from pytest_qwen3vl.source.families import MERGER_PREFIXES

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pytest_qwen3vl.onnxfile.dequantize import FileWeight

EQUAL, BF16, FP16, QUANTIZED = "equal", "bf16", "fp16", "quantized"
OTHER, DROPPED, ABSENT = "other", "dropped", "absent"
# Equal means equal to float32 rounding of a re-layout; rounded means equal to the rounded checkpoint.
SAME_REL_L2 = 1e-6
# A quantized tensor is the checkpoint's when at most this share of its elements lie more than one
# quantization step from the checkpoint's (round to nearest is within half a step, clipping one).
OFF_STEP_SHARE = 0.01
# How far rounding a float32 tensor to each format moves it at most: half a unit in the last place
# relative to each element (bfloat16 keeps 8 significant bits, float16 11), plus, absolutely, half the
# spacing of the format's subnormals per element (what flushes to zero).
_ROUNDING = {BF16: (2.0**-8, 2.0**-134), FP16: (2.0**-11, 2.0**-25)}
# By-value search compares this many elements of each candidate first, then the best one whole.
_SAMPLE = 4096
_SUFFIXES = ("_quantized", "_Q4", "_Q8", "_Q2", "_transposed", "_Transposed")


@dataclass(frozen=True)
class TensorVerdict:
    """One golden tensor and what the file holds for it."""

    key: str
    kind: str  # EQUAL, BF16, FP16, QUANTIZED, OTHER, DROPPED, ABSENT
    source: str = ""  # the file's tensor
    encoding: str = ""
    rel_l2: float = 0.0  # of the file's value against the checkpoint's
    detail: str = ""  # for OTHER: "the checkpoint's transposed", ...


class Stored(Mapping[str, "np.ndarray"]):
    """Tensors kept one per ``.npy`` file and read only when asked for: a process that goes through
    them holds one at a time (golden's in the weights child, the file's values in the check)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    @classmethod
    def write(cls, folder: Path, tensors: Mapping[str, Any]) -> Stored:
        """``tensors`` saved into ``folder`` (created) one by one."""
        import numpy as np

        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for index, (key, tensor) in enumerate(tensors.items()):
            files[key] = folder / f"{index}.npy"
            np.save(files[key], np.asarray(tensor))
        return cls(files)

    def __getitem__(self, key: str) -> np.ndarray:
        import numpy as np

        array: np.ndarray = np.load(self._files[key])
        return array

    def __contains__(self, key: object) -> bool:  # Mapping's would read the tensor
        return key in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def files(self) -> dict[str, str]:
        """Key -> file name, for the process that reads them (JSON)."""
        return {key: str(path) for key, path in self._files.items()}


@dataclass
class WeightReport:
    """Every golden tensor's verdict, and the file's values that differ from golden's, by golden name
    in PyTorch's layout (what golden is run with to judge the graph; the equal ones it holds)."""

    verdicts: list[TensorVerdict] = field(default_factory=list)
    values: Mapping[str, np.ndarray] = field(default_factory=dict)
    # golden's own tensors under the keys of ``values``, where they are on disk already (what golden
    # is restored from after holding the file's values; empty: golden saves its own)
    saved: Mapping[str, np.ndarray] = field(default_factory=dict)

    def kinds(self, *kinds: str) -> list[TensorVerdict]:
        return [v for v in self.verdicts if v.kind in kinds]

    @property
    def all_equal(self) -> bool:
        """Every tensor the file holds is the checkpoint's as it is: its parity runs judge its graph."""
        return not self.kinds(BF16, FP16, QUANTIZED, OTHER)

    @property
    def explained(self) -> bool:
        """No tensor holds other values, and none but DeepStack's (not exported) is missing."""
        return not self.kinds(OTHER) and all(v.key.startswith(MERGER_PREFIXES) for v in self.kinds(ABSENT))

    def text(self) -> str:
        """One line: what the weights are, the unexplained ones first."""
        total = len(self.verdicts)
        absent = self.kinds(ABSENT)
        deepstack = [v for v in absent if v.key.startswith(MERGER_PREFIXES)]
        present = total - len(deepstack)  # a file without DeepStack outputs holds none of its mergers
        parts = []
        covered = False  # a line said "every weight": the equal ones need no count of their own
        other = self.kinds(OTHER)
        if other:
            shown = ", ".join(f"{v.key} ({v.detail or f'relative L2 {v.rel_l2:.2g}'})" for v in other[:3])
            parts.append(f"{len(other)} of {total} tensors are not the checkpoint's nor a rounding or quantization "
                         f"of it: {shown}{', ...' if len(other) > 3 else ''}")
        rounded = {BF16: "bfloat16", FP16: "float16"}
        kept = self.kinds(EQUAL, DROPPED)
        quantized = len(self.kinds(QUANTIZED))
        rest = ""  # said after the quantized ones: the model was cast, then some weights quantized
        for kind, word in rounded.items():
            found = self.kinds(kind)
            cast = (f"rounded to {word} (the model was cast before export; relative L2 up to "
                    f"{max((v.rel_l2 for v in found), default=0):.2g})")
            if found and len(found) + len(kept) == present:
                covered = True
                parts.append(f"every weight is the checkpoint's {cast}")
            elif found and quantized and len(found) + len(kept) + quantized == present:
                covered = True
                rest = f"every other weight is the checkpoint's {cast}"
            elif found:
                parts.append(f"{len(found)} rounded to {word} (relative L2 up to {max(v.rel_l2 for v in found):.2g})")
        groups: dict[str, list[TensorVerdict]] = {}
        for verdict in self.kinds(QUANTIZED):
            groups.setdefault(verdict.encoding, []).append(verdict)
        for encoding, found in groups.items():
            tables = [v for v in found if v.key.startswith("pos_embed")]
            what = ("position table" if tables and len(found) == 1 else
                    f"{len(found)} {'matmul weights' if not tables else 'tensors'}")
            parts.append(f"{what} {encoding}, relative L2 up to {max(v.rel_l2 for v in found):.2g}")
        if rest:
            parts.append(rest)
        equal = self.kinds(EQUAL)
        if equal and len(equal) + len(self.kinds(DROPPED)) == present:
            parts.append(f"every weight is the checkpoint's ({len(equal)} equal"
                         + (f", {len(self.kinds(DROPPED))} zero tensors dropped by the exporter)" if self.kinds(DROPPED)
                            else ")"))
        elif equal and not other and not covered:
            parts.append(f"{len(equal)} equal")
        if deepstack:
            parts.append("DeepStack not exported (its mergers' tensors are absent)")
        if len(absent) > len(deepstack):
            parts.append(f"{len(absent) - len(deepstack)} not found by name nor by value")
        return "; ".join(parts)


def _rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    import numpy as np

    norm = float(np.linalg.norm(ref)) or 1.0
    return float(np.linalg.norm(got.astype(np.float64) - ref)) / norm


def _rounded(ref: np.ndarray, kind: str) -> np.ndarray:
    import numpy as np
    import torch

    if kind == FP16:
        return ref.astype(np.float16).astype(np.float64)
    rounded: np.ndarray = torch.from_numpy(ref.astype(np.float32)).to(torch.bfloat16).to(torch.float64).numpy()
    return rounded


def _may_be_rounded(kind: str, rel: float, size: int, norm: float) -> bool:
    """Whether a value at relative L2 ``rel`` from a tensor of ``size`` elements and L2 ``norm`` can be
    that tensor rounded to ``kind``: one farther than twice what rounding moves a tensor cannot (so
    another checkpoint's tensor costs no rounding passes: at 4B they were most of the weights process's
    time)."""
    import math

    unit, subnormal = _ROUNDING[kind]
    return rel <= 2 * (unit + math.sqrt(size) * subnormal / norm) + SAME_REL_L2


def verdict(key: str, weight: FileWeight, value: np.ndarray, ref: np.ndarray) -> TensorVerdict:
    """What ``value`` (``weight``'s value in ``ref``'s layout) is of the checkpoint's ``ref``."""
    import numpy as np

    rel = _rel_l2(value, ref)

    def found(kind: str, detail: str = "") -> TensorVerdict:
        return TensorVerdict(key, kind, weight.name, weight.encoding, rel, detail)

    if weight.step is not None:
        step = weight.step if weight.step.shape == value.shape else weight.step.T
        if float(np.mean(np.abs(value - ref) > step * 1.001 + 1e-12)) <= OFF_STEP_SHARE:
            return found(QUANTIZED)
    elif rel <= SAME_REL_L2:
        return found(EQUAL)
    else:
        norm = float(np.linalg.norm(ref)) or 1.0
        for kind in (BF16, FP16):
            if _may_be_rounded(kind, rel, ref.size, norm) and _rel_l2(value, _rounded(ref, kind)) <= SAME_REL_L2:
                return found(kind)
    square = ref.ndim == 2 and ref.shape[0] == ref.shape[1]
    return found(OTHER, "the checkpoint's transposed" if square and _rel_l2(value, ref.T) < min(rel, 0.05) else "")


def _layouts(weight: FileWeight, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``weight``'s value in ``shape``: as it is, or transposed where its consumer did not fix it."""
    value = weight.value
    found = [value] if value.shape == shape else []
    if not weight.oriented and value.ndim == 2 and value.T.shape == shape and value.shape != shape:
        found.append(value.T)
    return found


def compare_weights(path: Path, state: Mapping[str, Any]) -> WeightReport:
    """Each golden tensor of ``state`` against the file's weight of its name, else the nearest of its
    shape by value; see the module's docstring."""
    import numpy as np

    from pytest_qwen3vl.onnxfile.dequantize import read_weights

    weights = read_weights(path)
    named: dict[str, FileWeight] = {}
    for weight in weights:
        base = weight.name
        for suffix in _SUFFIXES:
            base = base.removesuffix(suffix)
        key = state_key(base, state)
        if key is not None:
            named.setdefault(key, weight)
    by_shape: dict[tuple[int, ...], list[FileWeight]] = {}
    for weight in weights:
        flips = not weight.oriented and weight.value.ndim == 2
        shapes = {weight.value.shape} | ({weight.value.T.shape} if flips else set())
        for shape in shapes:
            by_shape.setdefault(shape, []).append(weight)
    report = WeightReport()
    values: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        ref = np.asarray(tensor, dtype=np.float64)
        chosen: tuple[FileWeight, np.ndarray] | None = None
        by_name = named.get(key)
        if by_name is not None:
            layouts = _layouts(by_name, ref.shape)
            if layouts:
                chosen = by_name, min(layouts, key=lambda v: _rel_l2(v, ref))
        if chosen is None:
            chosen = _nearest(ref, by_shape.get(ref.shape, []))
        if chosen is None:
            report.verdicts.append(TensorVerdict(key, ABSENT if ref.any() else DROPPED))
            continue
        found = verdict(key, chosen[0], chosen[1], ref)
        if found.kind == OTHER and by_name is None:  # the nearest of its shape is another tensor
            found = TensorVerdict(key, ABSENT if ref.any() else DROPPED)
        report.verdicts.append(found)
        if found.kind not in (EQUAL, DROPPED, ABSENT):  # golden holds the equal ones already
            values[key] = chosen[1]
    report.values = values
    return report


def _nearest(ref: np.ndarray, candidates: Sequence[FileWeight]) -> tuple[FileWeight, np.ndarray] | None:
    """The candidate layout nearest ``ref`` by relative L2, judged on a strided sample first."""
    import numpy as np

    options = [(w, v) for w in candidates for v in _layouts(w, ref.shape)]
    if not options:
        return None
    flat = ref.reshape(-1)
    stride = max(1, flat.size // _SAMPLE)
    sample = flat[::stride]
    # ``flat`` takes the sample in the order ``reshape(-1)`` gives, without copying a transposed layout whole
    best = min(options, key=lambda o: _rel_l2(np.asarray(o[1]).flat[::stride], sample))
    return best



def cast_buffers(report: WeightReport, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Every floating buffer of ``model`` rounded as the file's float weights were, where they were
    rounded one way (bfloat16 or float16); else none."""
    import torch

    rounded = {v.kind for v in report.verdicts} & {BF16, FP16}
    if len(rounded) != 1:
        return {}
    dtype = torch.bfloat16 if rounded == {BF16} else torch.float16
    return {name: buffer.detach().to(dtype).to(torch.float32).numpy()
            for name, buffer in model.named_buffers() if buffer.is_floating_point()}


def compare_in_child(path: Path, state: Mapping[str, np.ndarray], folder: Path) -> WeightReport:
    """``compare_weights`` in a child process: golden's tensors go to it as ``.npy`` files it reads one
    at a time, the verdicts come back, and the values that differ from golden's stay in ``folder`` as
    ``.npy`` files the report reads when asked, beside golden's own under the same keys (``saved``;
    the others are removed). The caller keeps ``folder`` while it uses them. ``ProbeFailed`` when the
    child does not finish (our fault, never a verdict)."""
    golden = Stored.write(folder / "golden", state)
    (folder / "golden.json").write_text(json.dumps(golden.files()))
    result = folder / "verdicts.json"
    values: dict[str, str] = {}
    try:
        run_module(__name__, str(path), str(folder), what="the weights process", result=result)
        report = WeightReport([TensorVerdict(**v) for v in json.loads(result.read_text())])
        values = json.loads((folder / "values.json").read_text())
    finally:
        for key, name in golden.files().items():
            if key not in values:
                Path(name).unlink()
    report.values = Stored({key: Path(name) for key, name in values.items()})
    report.saved = Stored({key: Path(name) for key, name in golden.files().items() if key in values})
    return report


def main(argv: list[str] | None = None) -> None:
    """The child: ``python -m pytest_qwen3vl.judge.weights FILE FOLDER`` reads the golden tensors
    FOLDER/golden.json names and writes FOLDER/verdicts.json, and the differing values into
    FOLDER/values (named in FOLDER/values.json)."""
    path, folder = (Path(a) for a in (argv or sys.argv[1:]))
    state = Stored({key: Path(name) for key, name in json.loads((folder / "golden.json").read_text()).items()})
    report = compare_weights(path, state)
    values = Stored.write(folder / "values", report.values)
    (folder / "values.json").write_text(json.dumps(values.files()))
    (folder / "verdicts.json").write_text(json.dumps([asdict(v) for v in report.verdicts]))


if __name__ == "__main__":
    main()
