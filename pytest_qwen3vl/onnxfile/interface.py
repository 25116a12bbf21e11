"""What a vision encoder file takes and gives, and its weight type, read once from its structure.

``read_file`` is all that start-up can say about a file without a session: a bad file is a
one-line ``ArtefactError``. Its result is plain data (``to_dict``/``from_dict``), so the process
that read the file hands it to xdist workers instead of each worker reading the file again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ArtefactError, SettingsError
from pytest_qwen3vl.onnxfile.names import GRID_NAMES, PIXEL_NAMES, POOLED_NAMES, STACKED_OUTPUT, deepstack_index
from pytest_qwen3vl.onnxfile.weights import WeightType, weight_type

if TYPE_CHECKING:
    import onnx


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
    """Which of a file's outputs is pooled and which are DeepStack, where their names say neither."""

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
                    raise SettingsError(f"{text!r}: unknown key {key!r} (pooled, deepstack)")
                values.setdefault(key, [])
            if not key or not item:
                raise SettingsError(f"{text!r}: expected pooled=NAME[,deepstack=NAME,NAME...]")
            values[key].append(item)
        if len(values.get("pooled", [])) != 1:
            raise SettingsError(f"{text!r}: name exactly one pooled output")
        return cls(values["pooled"][0], tuple(values.get("deepstack", ())))

    def names(self) -> tuple[str, ...]:
        return (self.pooled, *self.deepstack)


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

    def mapping_example(self) -> str:
        """A mapping of this file's outputs to offer a user whose output names are not recognised."""
        names = [p.name for p in self.outputs]
        return f"pooled={names[0]}" + (f",deepstack={','.join(names[1:])}" if len(names) > 1 else "")

    def unrecognised_text(self) -> str:
        """Why the outputs are not recognised: their names and what was expected."""
        return (f"outputs not recognised: {', '.join(p.text() for p in self.outputs)}; expected pooled_embeds or "
                "image_features (or a single output) and deepstack_<i>, deepstack_features_<i> or a stacked "
                "deepstack_features")

    def to_dict(self) -> dict[str, Any]:
        def port(p: Port | None) -> list[Any] | None:
            return None if p is None else [p.name, p.elem_type, None if p.dims is None else list(p.dims)]

        return {"inputs": [port(p) for p in self.inputs], "outputs": [port(p) for p in self.outputs],
                "pixels": port(self.pixels), "grid": port(self.grid), "pooled": port(self.pooled),
                "deepstack": [port(p) for p in self.deepstack], "stacked": port(self.stacked),
                "unrecognised": [port(p) for p in self.unrecognised]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interface:
        def port(value: list[Any] | None) -> Port | None:
            return None if value is None else Port(value[0], value[1], None if value[2] is None else tuple(value[2]))

        def ports(values: list[Any]) -> tuple[Port, ...]:
            return tuple(p for p in map(port, values) if p is not None)

        pixels = port(data["pixels"])
        assert pixels is not None  # an interface is only ever made with a pixel input
        return cls(ports(data["inputs"]), ports(data["outputs"]), pixels, port(data["grid"]), port(data["pooled"]),
                   ports(data["deepstack"]), port(data["stacked"]), ports(data["unrecognised"]))


@dataclass(frozen=True)
class FileFacts:
    """Everything read from a file before it runs: its interface and its weight type."""

    path: Path
    interface: Interface
    weights: WeightType
    initializers: tuple[tuple[str, tuple[int, ...]], ...] = ()  # name and dims of each
    external: tuple[str, ...] = ()  # its external data files, relative to its folder, each present and whole
    ops: tuple[str, ...] = ()  # its operator types, sorted: how a runtime must load it can depend on them

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "interface": self.interface.to_dict(),
                "weights": [self.weights.name, self.weights.evidence],
                "initializers": [[name, list(dims)] for name, dims in self.initializers],
                "external": list(self.external), "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileFacts:
        return cls(Path(data["path"]), Interface.from_dict(data["interface"]), WeightType(*data["weights"]),
                   tuple((name, tuple(dims)) for name, dims in data["initializers"]), tuple(data["external"]),
                   tuple(data["ops"]))


def _ports(values: Iterable[onnx.ValueInfoProto], skip: set[str]) -> tuple[Port, ...]:
    from pytest_qwen3vl.onnxfile.signature import value_info

    ports = []
    for value in values:
        if value.name in skip:
            continue
        info = value_info(value)
        ports.append(Port(info["name"], info["elem_type"], None if info["dims"] is None else tuple(info["dims"])))
    return tuple(ports)


def _pick(ports: Iterable[Port], names: tuple[str, ...], wanted: Callable[[Port], bool]) -> Port | None:
    """The port with one of ``names``, else the only port that ``wanted`` accepts."""
    ports = list(ports)
    named = [p for p in ports if p.name in names]
    if named:
        return named[0]
    fitting = [p for p in ports if wanted(p)]
    return fitting[0] if len(fitting) == 1 else None


def recognise(model: onnx.ModelProto, path: Path, mapping: OutputMap | None = None) -> Interface:
    """Inputs by name, else the one floating (pixels) and one integer (grid) input of rank 2; outputs
    by name or ``mapping``. ``ArtefactError`` when there is no pixel-values input, or when ``mapping``
    names an output the file does not have."""
    inputs = _ports(model.graph.input, {init.name for init in model.graph.initializer})
    outputs = _ports(model.graph.output, set())
    pixels = _pick(inputs, PIXEL_NAMES, lambda p: p.floating and (p.dims is None or len(p.dims) == 2))
    if pixels is None:
        raise ArtefactError(
            f"{path}: no pixel-values input (a floating input of rank 2 or named pixel_values); "
            f"inputs: {', '.join(p.text() for p in inputs) or 'none'}"
        )
    grid = _pick([p for p in inputs if p is not pixels], GRID_NAMES, lambda p: p.elem_type.startswith(("int", "uint")))
    by_name = {p.name: p for p in outputs}
    stacked = None
    if mapping is not None:
        absent = [name for name in mapping.names() if name not in by_name]
        if absent:
            raise ArtefactError(f"{path}: the output mapping names {', '.join(absent)}, which the file does not "
                                f"have; its outputs: {', '.join(by_name)}")
        pooled: Port | None = by_name[mapping.pooled]
        deepstack = tuple(by_name[n] for n in mapping.deepstack)
    else:
        pooled = _pick(outputs, POOLED_NAMES, lambda p: len(outputs) == 1)
        numbered = sorted((index, p) for p in outputs if (index := deepstack_index(p.name)) is not None)
        deepstack = tuple(p for _, p in numbered)
        stacked = by_name.get(STACKED_OUTPUT)
    known = {p.name for p in (pooled, stacked, *deepstack) if p is not None}
    return Interface(inputs, outputs, pixels, grid, pooled, deepstack, stacked,
                     tuple(p for p in outputs if p.name not in known))


def read_file(path: Path, mapping: OutputMap | None = None) -> FileFacts:
    """A file's interface and weight type from its structure alone (no weights' data, no session), and its
    external data files (``ArtefactError`` when one is missing or short)."""
    from pytest_qwen3vl.onnxfile.structure import external_files, structure

    model = structure(path)
    shapes = tuple((init.name, tuple(int(d) for d in init.dims)) for init in model.graph.initializer)
    ops = tuple(sorted({node.op_type for node in model.graph.node}))
    return FileFacts(path, recognise(model, path, mapping), weight_type(model), shapes, external_files(model, path),
                     ops)
