"""A user's own ONNX vision encoder judged against golden PyTorch with the same weights.

What a file is (its interface and weight type) is read from the graph without loading weights, so
a bad ``--qwen3vl-onnx`` is a one-line usage error at start-up. How it computes is measured per
grid by ``ArtefactCheck``: ONNX Runtime against the golden model on the same inputs, DeepStack
outputs matched to golden's features by value, and, where a grid goes wrong, the first module
whose output drifts (probes exposed as extra outputs on a copy of the graph).

onnx, onnxruntime, numpy and torch are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ArtefactError, ProbeFailed, SettingsError
from pytest_qwen3vl.export.probe import SESSION_CONFIG
from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec

PIXEL_NAMES = ("pixel_values",)
GRID_NAMES = ("image_grid_thw", "grid_thw")
POOLED_NAMES = ("pooled_embeds", "image_features")
STACKED_NAME = "deepstack_features"
_DEEPSTACK = re.compile(r"^deepstack_(?:features_)?(\d+)$")
# An output "is" a golden tensor only above this cosine; golden's tensors are nearly orthogonal to
# each other (|cos| <= 0.01 measured), matched ones are above 0.9998 even for int8 files.
MATCH_COSINE = 0.9
_QUANT_OPS = frozenset({
    "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul",
    "QLinearConv", "MatMulNBits", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "GatherBlockQuantized",
})
_LOW_BIT = ("INT8", "UINT8", "INT4", "UINT4")


# ---------------------------------------------------------------- interface


@dataclass(frozen=True)
class Port:
    """A graph input or output: name, element type, dims (sizes or symbolic names)."""

    name: str
    elem_type: str
    dims: tuple[int | str | None, ...] | None

    def text(self) -> str:
        dims = "?" if self.dims is None else ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name} {self.elem_type}[{dims}]"

    @property
    def floating(self) -> bool:
        return self.elem_type.startswith(("float", "bfloat"))


@dataclass(frozen=True)
class OutputMap:
    """``--qwen3vl-onnx-outputs``: which of a file's outputs is pooled and which are DeepStack."""

    pooled: str
    deepstack: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> OutputMap:
        """``pooled=NAME[,deepstack=NAME,NAME...]``; a name without ``key=`` continues the last key."""
        values: dict[str, list[str]] = {}
        key = ""
        for item in (part.strip() for part in text.split(",")):
            if "=" in item:
                key, _, item = (s.strip() for s in item.partition("="))
                if key not in ("pooled", "deepstack"):
                    raise SettingsError(f"--qwen3vl-onnx-outputs={text!r}: unknown key {key!r} (pooled, deepstack)")
                values.setdefault(key, [])
            if not key or not item:
                raise SettingsError(f"--qwen3vl-onnx-outputs={text!r}: expected pooled=NAME[,deepstack=NAME,NAME...]")
            values[key].append(item)
        if len(values.get("pooled", [])) != 1:
            raise SettingsError(f"--qwen3vl-onnx-outputs={text!r}: name exactly one pooled output")
        return cls(values["pooled"][0], tuple(values.get("deepstack", ())))


@dataclass(frozen=True)
class Interface:
    """What a file takes and gives, recognised by name (or, for inputs, by type and rank)."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    pixels: Port
    grid: Port | None
    pooled: Port | None
    deepstack: tuple[Port, ...]
    stacked: Port | None  # one [D, num_merged_patches, H] output instead of D outputs
    unrecognised: tuple[Port, ...]

    @property
    def recognised(self) -> bool:
        return self.pooled is not None and not self.unrecognised

    @property
    def has_deepstack(self) -> bool:
        return bool(self.deepstack) or self.stacked is not None

    def describe(self) -> str:
        inputs = ", ".join(p.text() for p in self.inputs)
        outputs = ", ".join(p.text() for p in self.outputs)
        return f"inputs {inputs}; outputs {outputs}"

    def mapping_hint(self) -> str:
        """The message for a file whose outputs are not recognised: its names and how to map them."""
        names = [p.name for p in self.outputs]
        example = f"pooled={names[0]}" + (f",deepstack={','.join(names[1:])}" if len(names) > 1 else "")
        return (f"outputs not recognised: {', '.join(p.text() for p in self.outputs)}; expected pooled_embeds or "
                "image_features (or a single output) and deepstack_<i>, deepstack_features_<i> or a stacked "
                f"deepstack_features; map them with --qwen3vl-onnx-outputs={example} (ini key qwen3vl_onnx_outputs)")


def load_structure(path: Path) -> onnx.ModelProto:
    """The model without its weights' data (``probe.structure``); ``ArtefactError`` when the file is
    not an ONNX model."""
    from pytest_qwen3vl.export.probe import structure

    model = structure(path)
    if not model.ir_version or not model.graph.output:
        raise ArtefactError(f"--qwen3vl-onnx={path}: not an ONNX model (no graph outputs)")
    return model


def _ports(values: Iterable[onnx.ValueInfoProto], skip: set[str]) -> tuple[Port, ...]:
    from pytest_qwen3vl.export.graph import value_info

    ports = []
    for value in values:
        if value.name in skip:
            continue
        info = value_info(value)
        ports.append(Port(info["name"], info["elem_type"], None if info["dims"] is None else tuple(info["dims"])))
    return tuple(ports)


def _pick(ports: Iterable[Port], names: tuple[str, ...], wanted: Any) -> Port | None:
    """The port with one of ``names``, else the only port that ``wanted`` accepts."""
    ports = list(ports)
    named = [p for p in ports if p.name in names]
    if named:
        return named[0]
    fitting = [p for p in ports if wanted(p)]
    return fitting[0] if len(fitting) == 1 else None


def recognise(model: onnx.ModelProto, path: Path, mapping: OutputMap | None = None) -> Interface:
    """Inputs by name, else the one floating (pixels) and one integer (grid) input of rank 2; outputs
    by name or ``mapping``. ``ArtefactError`` when there is no pixel-values input."""
    inputs = _ports(model.graph.input, {init.name for init in model.graph.initializer})
    outputs = _ports(model.graph.output, set())
    pixels = _pick(inputs, PIXEL_NAMES, lambda p: p.floating and (p.dims is None or len(p.dims) == 2))
    if pixels is None:
        raise ArtefactError(
            f"--qwen3vl-onnx={path}: no pixel-values input (a floating input of rank 2 or named pixel_values); "
            f"inputs: {', '.join(p.text() for p in inputs) or 'none'}"
        )
    grid = _pick([p for p in inputs if p is not pixels], GRID_NAMES, lambda p: p.elem_type.startswith(("int", "uint")))
    by_name = {p.name: p for p in outputs}
    stacked = None
    if mapping is not None and mapping.pooled in by_name:
        pooled: Port | None = by_name[mapping.pooled]
        deepstack = tuple(by_name[n] for n in mapping.deepstack if n in by_name)
    else:
        pooled = _pick(outputs, POOLED_NAMES, lambda p: len(outputs) == 1)
        numbered = sorted((int(m.group(1)), p) for p in outputs if (m := _DEEPSTACK.match(p.name)))
        deepstack = tuple(p for _, p in numbered)
        stacked = by_name.get(STACKED_NAME)
    known = {p.name for p in (pooled, stacked, *deepstack) if p is not None}
    return Interface(inputs, outputs, pixels, grid, pooled, deepstack, stacked,
                     tuple(p for p in outputs if p.name not in known))


def check_file(path: Path, mapping: OutputMap | None = None) -> Interface:
    """Everything start-up can say about a ``--qwen3vl-onnx`` file without weights or a session."""
    return recognise(load_structure(path), path, mapping)


# ---------------------------------------------------------------- weight type and tolerance


@dataclass(frozen=True)
class Tolerance:
    """Limits on relative L2, max abs over max |golden|, and cosine (each must hold)."""

    rel_l2: float
    max_rel: float
    cosine: float

    def text(self) -> str:
        return f"rel L2 <= {self.rel_l2:g}, max abs/max|golden| <= {self.max_rel:g}, cosine >= {self.cosine:.10g}"

    def replace(self, overrides: Mapping[str, float]) -> Tolerance:
        return dataclasses.replace(self, **overrides)


# Measured on tiny and 4B-dimension exports (docs/artefact.md): each class passes its own limits with
# >= 3.7x margin and fails the next tighter class. bf16 is not measured; its 8-bit mantissa puts it
# with the quantized files.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel_l2=1e-5, max_rel=1e-4, cosine=1 - 1e-8),
    "fp16": Tolerance(rel_l2=5e-3, max_rel=1e-2, cosine=1 - 1e-5),
    "bf16": Tolerance(rel_l2=1e-1, max_rel=2e-1, cosine=1 - 5e-3),
    "quantized": Tolerance(rel_l2=1e-1, max_rel=2e-1, cosine=1 - 5e-3),
}


def parse_tolerance(text: str) -> dict[str, float]:
    """``rel_l2=1e-4,max_rel=1e-3,cosine=0.99999`` (any subset) for ``--qwen3vl-onnx-tolerance``."""
    overrides: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in Tolerance.__dataclass_fields__:
            raise SettingsError(f"--qwen3vl-onnx-tolerance={text!r}: unknown limit {key!r} (rel_l2, max_rel, cosine)")
        try:
            overrides[key] = float(value)
        except ValueError:
            raise SettingsError(f"--qwen3vl-onnx-tolerance={text!r}: {key} is not a number") from None
    return overrides


@dataclass(frozen=True)
class WeightType:
    """The file's weight class and why: initializer elements by type, quantization operators."""

    name: str
    evidence: str


def weight_type(model: onnx.ModelProto) -> WeightType:
    """"quantized" if quantization operators or 8/4-bit elements outweigh float32, else "fp16"/"bf16"
    if those elements outweigh float32, else "fp32". Cast nodes are no evidence (an fp32 export has
    dozens for its grid arithmetic)."""
    import math

    import onnx

    elements: Counter[str] = Counter()
    for init in model.graph.initializer:
        elements[onnx.TensorProto.DataType.Name(init.data_type)] += math.prod(init.dims)
    quant = Counter(n.op_type for n in model.graph.node if n.op_type in _QUANT_OPS)
    total = sum(elements.values()) or 1
    shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in elements.most_common(3))
    evidence = f"initializer elements {shares}" + (
        f"; quantization ops {', '.join(f'{k} {v}' for k, v in quant.most_common(3))}" if quant else "")
    if quant or sum(elements[k] for k in _LOW_BIT) > elements["FLOAT"]:
        return WeightType("quantized", evidence)
    for name, key in (("fp16", "FLOAT16"), ("bf16", "BFLOAT16")):
        if elements[key] > elements["FLOAT"]:
            return WeightType(name, evidence)
    return WeightType("fp32", evidence)


# ---------------------------------------------------------------- weights against the checkpoint


def state_key(name: str, keys: Mapping[str, Any]) -> str | None:
    """The state-dict key an initializer name ends with (``model.visual.blocks.0.norm1.weight`` ->
    ``blocks.0.norm1.weight``), else None."""
    parts = name.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in keys:
            return candidate
    return None


def misfits(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Initializers named like a golden tensor whose shape is neither golden's nor its transpose."""
    found = []
    for init in model.graph.initializer:
        key = state_key(init.name.removesuffix("_quantized").removesuffix("_Transposed"), shapes)
        if key is None:
            continue
        shape, want = tuple(init.dims), shapes[key]
        if shape not in (want, want[::-1]):
            found.append(f"{init.name} is {list(shape)}, the config's {key} is {list(want)}")
    return found


# Golden tensors without an initializer of their name are looked for by value up to this size: the
# LayerNorm and bias vectors an exporter deduplicates (a 4B weight matrix has 4 M elements).
BY_VALUE_ELEMENTS = 1 << 16


@dataclass
class WeightComparison:
    """Golden tensors found in the file by name (equal or different), by value under another name
    (deduplicated or folded by the exporter), or absent."""

    same: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    by_value: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def text(self) -> str:
        total = len(self.same) + len(self.differ)
        parts = [f"{len(self.differ)} of {total} golden tensors found by name differ"
                 + (f" ({', '.join(self.differ[:3])}{', ...' if len(self.differ) > 3 else ''})" if self.differ else "")]
        deepstack = [k for k in self.missing if k.startswith("deepstack_merger_list.")]
        others = [k for k in self.missing if k not in deepstack]
        if self.by_value:
            parts.append(f"{len(self.by_value)} more equal a tensor of the file under another name or are zero "
                         "(deduplicated, folded or dropped by the exporter)")
        if deepstack:
            parts.append("DeepStack not exported (its mergers' tensors are absent)")
        if others:
            parts.append(f"{len(others)} not found by name (nor by value, where small enough to look)")
        return "; ".join(parts)


def compare_weights(path: Path, state: Mapping[str, Any], limit: float = 1e-3) -> WeightComparison:
    """Each golden tensor against the file's initializer of that name: through ``Identity`` aliases
    (the exporter deduplicates equal tensors), dequantized for ``quantize_dynamic`` files (2 %), as
    is or transposed, within ``limit`` relative L2 (fp16 weights differ by ~1e-4). A golden tensor
    with no initializer of its name is looked for by value among the float initializers of its
    shape (the dynamo exporter keeps one of several equal LayerNorm tensors under one name), and an
    all-zero one counts as found (optimizers drop the Add of a zero bias). Only
    tensors up to ``BY_VALUE_ELEMENTS`` are looked for so, which bounds the work on a 4B file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    names: dict[str, str] = {}
    for name in [*inits, *aliases]:
        key = state_key(name.removesuffix("_quantized").removesuffix("_Transposed"), state)
        if key is not None:
            names.setdefault(key, name)

    def array(name: str) -> np.ndarray:
        value: np.ndarray = np.asarray(numpy_helper.to_array(inits[aliases.get(name, name)]), dtype=np.float64)
        return value

    def close(got: np.ndarray, ref: np.ndarray, bound: float) -> bool:
        if got.shape != ref.shape and got.T.shape == ref.shape:
            got = got.T
        norm = float(np.linalg.norm(ref)) or 1.0
        return got.shape == ref.shape and float(np.linalg.norm(got - ref)) <= bound * norm

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, init in inits.items():
        if init.data_type in floats:
            by_shape.setdefault(tuple(init.dims), []).append(name)

    result = WeightComparison()
    for key, tensor in state.items():
        ref = np.asarray(tensor, dtype=np.float64)
        name = names.get(key)
        if name is None and ref.size <= BY_VALUE_ELEMENTS:
            shapes = {ref.shape, ref.shape[::-1]}
            # an all-zero tensor needs no initializer: exporters drop the Add of a zero bias
            candidates = (c for shape in shapes for c in by_shape.get(shape, ()))
            found = not ref.any() or any(close(array(c), ref, limit) for c in candidates)
            (result.by_value if found else result.missing).append(key)
            continue
        if name is None:
            result.missing.append(key)
            continue
        bound = limit
        if name.endswith("_quantized"):
            base = name.removesuffix("_quantized")
            if f"{base}_scale" not in inits:
                result.missing.append(key)
                continue
            zero = array(f"{base}_zero_point") if f"{base}_zero_point" in inits else 0.0
            got, bound = (array(name) - zero) * array(f"{base}_scale"), 0.02
        else:
            got = array(name)
        (result.same if close(got, ref, bound) else result.differ).append(key)
    return result


# ---------------------------------------------------------------- running and comparing


@dataclass(frozen=True)
class OutputParity:
    """One output against the golden tensor its name promises."""

    output: str
    golden: str
    max_abs: float
    max_rel: float
    rel_l2: float
    cosine: float
    nonfinite: int  # NaN and Inf values in the output

    def within(self, tolerance: Tolerance) -> bool:
        return (not self.nonfinite and self.rel_l2 <= tolerance.rel_l2 and self.max_rel <= tolerance.max_rel
                and self.cosine >= tolerance.cosine)

    def text(self) -> str:
        bad = f", {self.nonfinite} NaN/Inf" if self.nonfinite else ""
        return (f"{self.output}: max abs {self.max_abs:.2e}, rel L2 {self.rel_l2:.2e}, "
                f"cosine {self.cosine:.9f}{bad}")


@dataclass(frozen=True)
class GridRun:
    """One grid: the ONNX Runtime error, or each output's parity."""

    grid: Grid
    error: str | None
    outputs: tuple[OutputParity, ...] = ()
    problems: tuple[str, ...] = ()  # outputs that could not be compared (shape, absent)

    def passes(self, tolerance: Tolerance) -> bool:
        return self.error is None and not self.problems and all(o.within(tolerance) for o in self.outputs)

    def verdict(self, tolerance: Tolerance) -> str:
        """Why the grid is not served, in a few words; empty when it is."""
        if self.error is not None:
            return self.error
        if self.problems:
            return self.problems[0]
        worst = [o for o in self.outputs if not o.within(tolerance)]
        if not worst:
            return ""
        o = max(worst, key=lambda p: p.rel_l2)
        return f"{o.output}: {o.nonfinite} NaN/Inf" if o.nonfinite else f"{o.output} relative L2 {o.rel_l2:.2g}"


def ort_error(exc: BaseException) -> str:
    """An ONNX Runtime failure as a grid's verdict: ``ONNX Runtime: Reshape node /model/Reshape_7: <message>``."""
    from pytest_qwen3vl.export.runtime import runtime_failure

    return f"ONNX Runtime: {runtime_failure(exc)}"


def measure(actual: Any, expected: Any, output: str, golden: str) -> OutputParity:
    """Parity of one output (any float dtype) against golden, in float64."""
    import numpy as np

    from pytest_qwen3vl.export.runtime import parity

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    nonfinite = int(a.size - np.isfinite(a).sum())
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    p = parity(a, e)
    return OutputParity(output, golden, p.max_abs, p.max_rel, p.rel_l2, cosine(a, e), nonfinite)


def cosine(a: Any, b: Any) -> float:
    """Cosine of two same-shape arrays, flattened, in float64."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(x)) * float(np.linalg.norm(y))
    return float(x @ y) / norms if norms else 0.0


class GoldenRuns:
    """The golden model's outputs and module activations per grid, computed once per process."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, seed: int) -> None:
        self.model = model
        self.spec = spec
        self.seed = seed
        self.deepstack_layers = tuple(int(i) for i in spec.vision["deepstack_visual_indexes"])
        self._outputs: dict[Grid, tuple[np.ndarray, ...]] = {}

    def inputs(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        from pytest_qwen3vl.model.inputs import make_inputs

        x = make_inputs(grid, self.spec, self.seed)
        return x.pixel_values.numpy(), x.grid_thw.numpy()

    def outputs(self, grid: Grid) -> tuple[np.ndarray, ...]:
        """``(pooled, deepstack_0, deepstack_1, ...)`` as numpy arrays."""
        if grid not in self._outputs:
            import torch

            pixels, thw = self.inputs(grid)
            from pytest_qwen3vl.model.outputs import deepstack, merged

            with torch.inference_mode():
                outputs = self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
            self._outputs[grid] = (merged(outputs).numpy(), *(d.numpy() for d in deepstack(outputs)))
        return self._outputs[grid]

    def probes(self, grid: Grid) -> dict[str, np.ndarray]:
        """Module outputs by probe name (``patch_embed``, ``pos_add``, ``blocks.i``, ...), via hooks."""
        import torch

        got: dict[str, np.ndarray] = {}
        handles = [self.model.blocks[0].register_forward_pre_hook(
            lambda _m, args: got.__setitem__("pos_add", args[0].numpy().copy()))]
        for name, module in self.model.named_modules():
            if name == "patch_embed" or name == "merger" or re.fullmatch(r"(blocks|deepstack_merger_list)\.\d+", name):
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, key=name: got.__setitem__(key, out.numpy().copy())))
        pixels, thw = self.inputs(grid)
        try:
            with torch.inference_mode():
                self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
        finally:
            for handle in handles:
                handle.remove()
        return got

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()}


@dataclass(frozen=True)
class DeepStackMatch:
    """A DeepStack output of the file and the golden feature it equals (None: none above MATCH_COSINE)."""

    output: str
    position: int
    matched: int | None
    cosine: float


@dataclass(frozen=True)
class Location:
    """Where a grid goes wrong: the first probe outside tolerance, and each probe's relative L2."""

    grid: Grid
    first_bad: str | None
    probes: tuple[tuple[str, float | None], ...]  # None: not computed (after the failing node)
    failure: str | None
    problem: str | None = None  # ours: the probe process failed, so nothing is said of the file

    def text(self) -> str:
        shown = {name: value for name, value in self.probes}
        if self.problem is not None:
            return f"{self.grid.id}: not located ({self.problem})"
        if not self.probes:
            return (f"{self.grid.id}: not located: nodes carry no module scopes (TorchScript names "
                    "/<wrapper>/<module>/..., or dynamo's name_scopes metadata)")
        if self.first_bad is None and self.failure is None:
            return f"{self.grid.id}: every module matches golden: the outputs are wired otherwise (order or names)"
        if self.first_bad is None:
            return f"{self.grid.id}: every module matches up to where the run stops ({self.failure})"
        before = [n for n, _ in self.probes[: [n for n, _ in self.probes].index(self.first_bad)]]
        ok = f"right through {before[-1]}, " if before else ""
        value = shown[self.first_bad]
        drift = "not computed" if value is None else f"relative L2 {value:.2g}"
        return f"{self.grid.id}: {ok}drift starts at {self.first_bad} ({drift})"


class ArtefactCheck:
    """One ``--qwen3vl-onnx`` file against golden: runs and locations per grid, computed once each."""

    def __init__(self, path: Path, golden: GoldenRuns, mapping: OutputMap | None = None,
                 overrides: Mapping[str, float] | None = None) -> None:
        self.path = path
        self.golden = golden
        structure = load_structure(path)
        self.interface = recognise(structure, path, mapping)
        self.weights = weight_type(structure)
        self.tolerance = TOLERANCES[self.weights.name].replace(overrides or {})
        self.overridden = bool(overrides)
        self.structure = structure
        self._session: onnxruntime.InferenceSession | None = None
        self._load_error: str | None = None
        self._runs: dict[Grid, tuple[GridRun, dict[str, np.ndarray]]] = {}

    @property
    def tolerance_text(self) -> str:
        origin = "overridden" if self.overridden else f"{self.weights.name} tolerance"
        return f"{origin}: {self.tolerance.text()}"

    def session(self) -> onnxruntime.InferenceSession | None:
        """The ONNX Runtime session (external data next to the file loads with it), or None."""
        if self._session is None and self._load_error is None:
            from pytest_qwen3vl.export.runtime import ort_session, runtime_errors

            try:
                self._session = ort_session(self.path, config=SESSION_CONFIG)
            except runtime_errors() as exc:
                self._load_error = ort_error(exc)
        return self._session

    def feeds(self, grid: Grid) -> dict[str, np.ndarray]:
        """The golden inputs cast to the element types the file declares (ORT never converts)."""
        import numpy as np

        iface = self.interface
        pixels, thw = self.golden.inputs(grid)
        feeds: dict[str, np.ndarray] = {iface.pixels.name: pixels.astype(np.dtype(iface.pixels.elem_type))}
        if iface.grid is not None:
            feeds[iface.grid.name] = thw.astype(np.dtype(iface.grid.elem_type))
        return feeds

    def run(self, grid: Grid) -> GridRun:
        return self._run(grid)[0]

    def _run(self, grid: Grid) -> tuple[GridRun, dict[str, np.ndarray]]:
        if grid in self._runs:
            return self._runs[grid]
        session = self.session()
        if session is None:
            result: tuple[GridRun, dict[str, np.ndarray]] = (GridRun(grid, self._load_error), {})
        else:
            from pytest_qwen3vl.export.runtime import runtime_errors

            names = [p.name for p in self.interface.outputs]
            feeds = self.feeds(grid)  # outside the try: a fault in building them is ours, not the file's
            try:
                values = dict(zip(names, session.run(names, feeds), strict=True))
            except runtime_errors() as exc:
                result = (GridRun(grid, ort_error(exc)), {})
            else:
                result = (self._compare(grid, values), values)
        self._runs[grid] = result
        return result

    def deepstack_values(self, values: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """The file's DeepStack outputs in their declared order, a stacked output split along axis 0."""
        iface = self.interface
        if iface.stacked is not None and iface.stacked.name in values:
            stacked = values[iface.stacked.name]
            return [(f"{iface.stacked.name}[{i}]", stacked[i]) for i in range(stacked.shape[0])]
        return [(p.name, values[p.name]) for p in iface.deepstack]

    def _compare(self, grid: Grid, values: Mapping[str, Any]) -> GridRun:
        gold = self.golden.outputs(grid)
        pairs: list[tuple[str, Any, str, Any]] = []
        if self.interface.pooled is not None:
            pairs.append((self.interface.pooled.name, values[self.interface.pooled.name], "pooled", gold[0]))
        for i, (name, value) in enumerate(self.deepstack_values(values)):
            if i + 1 < len(gold):
                pairs.append((name, value, f"DeepStack {i}", gold[i + 1]))
        outputs, problems = [], []
        for name, value, label, expected in pairs:
            if tuple(value.shape) != tuple(expected.shape):
                problems.append(f"{name} has shape {list(value.shape)}, golden {label} {list(expected.shape)}")
                continue
            outputs.append(measure(value, expected, name, label))
        extra = len(self.deepstack_values(values)) - (len(gold) - 1)
        if extra > 0:
            problems.append(f"{extra} more DeepStack outputs than golden's {len(gold) - 1}")
        return GridRun(grid, None, tuple(outputs), tuple(problems))

    def deepstack_matches(self, grid: Grid) -> list[DeepStackMatch]:
        """Each DeepStack output matched by cosine to golden's DeepStack features (and pooled)."""
        run, values = self._run(grid)
        if run.error is not None:
            return []
        gold = self.golden.outputs(grid)
        matches = []
        for position, (name, value) in enumerate(self.deepstack_values(values)):
            best: tuple[int | None, float] = (None, 0.0)
            for index, expected in enumerate(gold):
                if tuple(expected.shape) == tuple(value.shape):
                    c = cosine(value, expected)
                    if c > best[1]:
                        best = (index - 1 if index else -1, c)
            matched = best[0] if best[1] >= MATCH_COSINE else None
            matches.append(DeepStackMatch(name, position, matched, best[1]))
        return matches

    # ------------------------------------------------------------ where it goes wrong

    def locate(self, grid: Grid) -> Location:
        """Probe the graph at module outputs on ``grid`` (in a child process, ``export/probe.py``) and
        name the first that leaves tolerance."""
        from pytest_qwen3vl.export.probe import probe_in_child

        self._session = None  # every grid's run is kept; at 4B one session less is ~1.4 GB less
        try:
            found = probe_in_child(self.path, self.feeds(grid))
        except ProbeFailed as exc:
            return Location(grid, None, (), None, problem=str(exc))
        if not found.probes:
            return Location(grid, None, (), None)
        gold = self.golden.probes(grid)
        rows: list[tuple[str, float | None]] = []
        first_bad = None
        for name in found.probes:
            if name not in found.values or name not in gold:
                rows.append((name, None))
                if found.failure is None and first_bad is None:
                    first_bad = name
                continue
            got, ref = found.values[name], gold[name]
            rel = measure(got.reshape(ref.shape), ref, name, name).rel_l2 if got.size == ref.size else float("inf")
            rows.append((name, rel))
            if first_bad is None and rel > self.tolerance.rel_l2:
                first_bad = name
        if first_bad is None and found.failure is not None:
            computed = [n for n, v in rows if v is not None]
            remaining = [n for n, v in rows if v is None]
            first_bad = remaining[0] if remaining and not computed else None
        return Location(grid, first_bad, tuple(rows), found.failure)


def served_line(check: ArtefactCheck, grids: Iterable[Grid]) -> tuple[bool, str]:
    """``serves 7 of 9 grids; fails 1x20x20 (ONNX Runtime: ...), 2x24x12 (pooled_embeds relative L2 0.96)``."""
    grids = list(grids)
    failing = [(g, check.run(g).verdict(check.tolerance)) for g in grids]
    failing = [(g, why) for g, why in failing if why]
    line = f"serves {len(grids) - len(failing)} of {len(grids)} grid{'s' if len(grids) != 1 else ''}"
    if failing:
        line += "; fails " + ", ".join(f"{g.id} ({why})" for g, why in failing)
    return not failing, line
