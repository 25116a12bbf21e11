"""Compare two Qwen3-VL modeling files by syntax tree and judge the report's one-diff claim.

Trees, not text: a fork may reformat, re-wrap, comment or re-quote the file freely, while every
change to what the code does is reported. Docstrings are part of the tree and count as changes,
because they are visible at run time (``__doc__``, ``help()``) and the claim is "one difference".

Statements are aligned body by body (module, class, function, ``if``/``for``/``with``/``try``
bodies), so a changed ``if`` test is one change at that ``if``, not a changed function.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, cast

from pytest_qwen3vl.errors import SourceError, UndecidableCondition
from pytest_qwen3vl.source.families import QWEN3_VL, Family, family_of
from pytest_qwen3vl.source.files import GOLDEN_CONDITION, MODIFIED_CONDITION, syntax_error

# Qwen3-VL's place, for messages about the report's file; a family's own is ``Family.deepstack_place``.
DEEPSTACK_PLACE = QWEN3_VL.deepstack_place
FLAG = "_skip_deepstack_export"
# The inputs of the DeepStack condition, in the order of a truth-table key.
INPUTS = ("layer_in_indexes", "flag_set", "tracing")

Combination = tuple[bool, bool, bool]
TruthTable = dict[Combination, bool]
ModeTable = dict[tuple[str, bool], bool]  # (mode, flag set) -> runs DeepStack, at a DeepStack layer

# The predicates a condition may read, as each way of running the model sets them (measured with
# torch 2.13 and transformers 4.57.6; ``pytest_qwen3vl.judge.gate`` measures them again, and a
# self-test keeps this table in step). The report's eight combinations are eager and
# ``torch.jit.trace`` (the TorchScript ONNX exporter); ``torch.export`` stands for
# ``torch.export.export`` (strict and non-strict) and ``torch.onnx.export(dynamo=True)``.
MODES: dict[str, dict[str, bool]] = {
    "eager": {"tracing": False, "exporting": False, "compiling": False},
    "torch.jit.trace": {"tracing": True, "exporting": False, "compiling": False},
    "torch.compile": {"tracing": False, "exporting": False, "compiling": True},
    "torch.export": {"tracing": False, "exporting": True, "compiling": True},
}
REPORT_MODES = ("eager", "torch.jit.trace")  # the modes the truth table's ``tracing`` input tells apart
State = tuple[bool, bool, str]  # (layer in indexes, flag set, mode)

_BODY_FIELDS = ("body", "orelse", "handlers", "finalbody", "cases")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_HEADER_NOTES = {
    "FunctionDef": "signature or decorators changed",
    "AsyncFunctionDef": "signature or decorators changed",
    "ClassDef": "bases or decorators changed",
    "For": "loop target or iterable changed",
    "AsyncFor": "loop target or iterable changed",
    "With": "context managers changed",
    "AsyncWith": "context managers changed",
    "ExceptHandler": "caught exception changed",
}


@dataclass(frozen=True)
class Source:
    """One parsed modeling file; ``label`` names it in every message (a path, or ``<golden>``)."""

    label: str
    text: str
    tree: ast.Module = field(repr=False, compare=False)

    def lines(self, span: tuple[int, int] | None) -> str:
        """The whole lines of ``span`` (1-based, inclusive), without the final newline."""
        if span is None:
            return ""
        return "\n".join(self.text.splitlines()[span[0] - 1 : span[1]])


def parse_source(text: str, label: str) -> Source:
    """Parse ``text``; a syntax error becomes a one-line ``SourceError`` naming ``label:line``."""
    try:
        tree = ast.parse(text, filename=label)
    except SyntaxError as exc:
        raise syntax_error(label, exc, text.encode("utf-8", errors="replace")) from None
    except ValueError as exc:  # null bytes in the source, on Pythons that say so with a ValueError
        raise syntax_error(label, SyntaxError(str(exc)), text.encode("utf-8", errors="replace")) from None
    return Source(label, text, tree)


def read_source(path: str | os.PathLike[str]) -> Source:
    """Read and parse a file, honouring a PEP 263 encoding declaration."""
    try:
        text = importlib.util.decode_source(Path(path).read_bytes())
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, SyntaxError) as exc:
        raise SourceError(f"{path}: cannot decode: {exc}") from None
    return parse_source(text, str(path))


def as_source(origin: Source | str | os.PathLike[str], label: str) -> Source:
    """A ``Source`` from a path or from text; a ``str`` with a newline is text, otherwise a path."""
    if isinstance(origin, Source):
        return origin
    if isinstance(origin, str) and "\n" in origin:
        return parse_source(origin, label)
    return read_source(origin)


@dataclass
class Change:
    """One difference: where it is, what kind, and both sides' lines (``None`` where absent)."""

    place: str
    kind: str  # added | removed | changed | condition | import
    golden_lines: tuple[int, int] | None
    modified_lines: tuple[int, int] | None
    golden_source: str
    modified_source: str
    note: str = ""
    golden_nodes: tuple[ast.AST, ...] = field(default=(), repr=False, compare=False)
    modified_nodes: tuple[ast.AST, ...] = field(default=(), repr=False, compare=False)
    within: tuple[ast.AST, ...] = field(default=(), repr=False, compare=False)  # golden ancestors
    header: bool = field(default=False, repr=False, compare=False)  # only the nodes' headers differ

    @property
    def golden_line(self) -> int | None:
        return self.golden_lines[0] if self.golden_lines else None

    @property
    def modified_line(self) -> int | None:
        return self.modified_lines[0] if self.modified_lines else None

    def where(self) -> str:
        """``Place (golden line 745, modified line 747)``, for messages; an absent side says so."""
        golden = f"golden line {self.golden_line}" if self.golden_line else "not in golden"
        modified = f"modified line {self.modified_line}" if self.modified_line else "not in modified"
        return f"{self.place} ({golden}, {modified})"

    def to_dict(self) -> dict[str, Any]:
        def side(lines: tuple[int, int] | None, source: str) -> dict[str, Any] | None:
            return None if lines is None else {"line": lines[0], "end_line": lines[1], "source": source}

        return {
            "place": self.place,
            "kind": self.kind,
            "note": self.note,
            "golden": side(self.golden_lines, self.golden_source),
            "modified": side(self.modified_lines, self.modified_source),
        }


def _dump(node: ast.AST) -> str:
    return ast.dump(node)  # positions are left out, so layout and comments never count


def _dump_list(node: ast.AST, name: str) -> list[str]:
    return [_dump(n) for n in getattr(node, name, [])]


def _has_body(node: ast.AST) -> bool:
    return any(isinstance(getattr(node, name, None), list) for name in _BODY_FIELDS)


def _qualname(place: str, name: str) -> str:
    return name if place == "<module>" else f"{place}.{name}"


def _key(node: ast.AST) -> str:
    """The loosest identity that pairs two differing statements: the type, and a def's name."""
    return f"{type(node).__name__} {node.name if isinstance(node, _DEFS) else ''}"


def _same_header_key(node: ast.AST) -> str:
    return f"{_key(node)} {_header(node)}" if _has_body(node) else _key(node)


def _same_bodies_key(node: ast.AST) -> str:
    return f"{_key(node)} {[_dump_list(node, name) for name in _BODY_FIELDS]}"


def _header(node: ast.AST) -> str:
    """The node without its bodies: a def's signature, an ``if``'s test, a loop's target and iterable."""
    bare = copy.copy(node)
    for name in _BODY_FIELDS:
        if hasattr(bare, name):
            setattr(bare, name, [])
    return _dump(bare)


# Keys that pair differing statements, strictest first: same header (a body changed), same
# bodies (a header changed), then only the same type and name.
_KEYS: tuple[Callable[[ast.AST], str], ...] = (_same_header_key, _same_bodies_key, _key)


def _start(node: Any) -> int:
    """First line, decorators included; a ``case`` has no position of its own, its pattern has."""
    if isinstance(node, ast.match_case):
        return int(node.pattern.lineno)
    return int(min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]))


def _end(node: Any) -> int:
    end = node.body[-1].end_lineno if isinstance(node, ast.match_case) else node.end_lineno
    return int(end or 0)


def _span(nodes: Sequence[ast.AST]) -> tuple[int, int] | None:
    return (_start(nodes[0]), max(_end(n) for n in nodes)) if nodes else None


def _header_span(node: ast.AST, source: Source) -> tuple[int, int]:
    """Lines from the header's start to its colon, without comments that precede the body."""
    start = _start(node)
    first = next(getattr(node, name)[0] for name in _BODY_FIELDS if getattr(node, name, None))
    end = max(start, _start(first) - 1)
    lines = source.text.splitlines()
    while end > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return start, end


def _resolve(module: str | None, level: int, package: str) -> str:
    """The absolute module of an import, relative ones taken inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    if level > len(parts):
        return "." * level + (module or "")
    return ".".join([*parts[: len(parts) - level + 1], *([module] if module else [])])


def _bindings(nodes: Sequence[ast.AST], package: str) -> dict[str, str]:
    """Name -> dotted object that a run of import statements binds."""
    bound: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, package)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


class _Differ:
    """Walks both trees body by body and collects ``Change`` objects in golden order."""

    def __init__(self, golden: Source, modified: Source, package: str) -> None:
        self.golden = golden
        self.modified = modified
        self.package = package
        self.changes: list[Change] = []

    def body(self, gs: list[Any], ms: list[Any], place: str, within: tuple[ast.AST, ...]) -> None:
        matcher = SequenceMatcher(None, [_dump(n) for n in gs], [_dump(n) for n in ms], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                self._block(gs[i1:i2], ms[j1:j2], place, within)

    def _block(self, gs: list[Any], ms: list[Any], place: str, within: tuple[ast.AST, ...], level: int = 0) -> None:
        """A run that differs: pair statements by ever looser keys; what stays unpaired is one block."""
        if not (gs and ms) or level == len(_KEYS) or not any(_has_body(n) for n in [*gs, *ms]):
            self._add_block(gs, ms, place, within)
            return
        key = _KEYS[level]
        matcher = SequenceMatcher(None, [key(n) for n in gs], [key(n) for n in ms], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                self._block(gs[i1:i2], ms[j1:j2], place, within, level + 1)
                continue
            for g, m in zip(gs[i1:i2], ms[j1:j2], strict=True):
                if _dump(g) == _dump(m):
                    continue
                if _has_body(g):
                    self._pair(g, m, place, within)
                else:
                    self._add_block([g], [m], place, within)

    def _pair(self, g: Any, m: Any, place: str, within: tuple[ast.AST, ...]) -> None:
        """Two compound statements of the same kind: compare the header, then each body."""
        inner = _qualname(place, g.name) if isinstance(g, _DEFS) else place
        if _header(g) != _header(m):
            if isinstance(g, ast.If | ast.While):
                kind = "condition"
                same = all(_dump_list(g, f) == _dump_list(m, f) for f in ("body", "orelse"))
                note = "only the test changed" if same else "the test changed; body changes are listed apart"
            else:
                kind, note = "changed", _HEADER_NOTES.get(type(g).__name__, "header changed")
            g_span, m_span = _header_span(g, self.golden), _header_span(m, self.modified)
            self.changes.append(self._change(inner, kind, note, (g,), (m,), g_span, m_span, within, header=True))
        for body_field in _BODY_FIELDS:
            if hasattr(g, body_field):
                self.body(getattr(g, body_field), getattr(m, body_field), inner, (*within, g))

    def _add_block(self, gs: list[Any], ms: list[Any], place: str, within: tuple[ast.AST, ...]) -> None:
        kind = "added" if not gs else "removed" if not ms else "changed"
        note = ""
        if gs and ms and all(isinstance(n, ast.Import | ast.ImportFrom) for n in [*gs, *ms]):
            kind, note = _import_kind(gs, ms, self.package)
        elif all(_is_docstring(n) for n in [*gs, *ms]):
            note = "docstring"
        elif len(gs) + len(ms) == 1 and isinstance(node := (gs or ms)[0], _DEFS):
            note = f"{'adds' if ms else 'removes'} {type(node).__name__} {node.name}"
        change = self._change(place, kind, note, tuple(gs), tuple(ms), _span(gs), _span(ms), within)
        self.changes.append(change)

    def _change(
        self,
        place: str,
        kind: str,
        note: str,
        gs: tuple[ast.AST, ...],
        ms: tuple[ast.AST, ...],
        g_span: tuple[int, int] | None,
        m_span: tuple[int, int] | None,
        within: tuple[ast.AST, ...],
        header: bool = False,
    ) -> Change:
        g_text, m_text = self.golden.lines(g_span), self.modified.lines(m_span)
        return Change(place, kind, g_span, m_span, g_text, m_text, note, gs, ms, within, header)


def _import_kind(gs: Sequence[ast.AST], ms: Sequence[ast.AST], package: str) -> tuple[str, str]:
    """``import`` when both runs bind the same names to the same objects, else ``changed``."""
    g, m = _bindings(gs, package), _bindings(ms, package)
    if g == m:
        return "import", "rewritten, binds the same objects: " + ", ".join(f"{k}={v}" for k, v in g.items())
    differ = sorted(k for k in g.keys() | m.keys() if g.get(k) != m.get(k))
    return "changed", "imports bind other objects: " + ", ".join(
        f"{k}: {g.get(k, '(unbound)')} -> {m.get(k, '(unbound)')}" for k in differ
    )


def diff_sources(golden: Source, modified: Source) -> list[Change]:
    """Every change from ``golden`` to ``modified``, in golden order (relative imports are resolved in
    golden's family package)."""
    differ = _Differ(golden, modified, (family_of(golden.tree) or QWEN3_VL).package)
    differ.body(golden.tree.body, modified.tree.body, "<module>", ())
    return differ.changes


# The DeepStack condition: a truth table over the three inputs the reference condition reads.


def _template(source: str) -> str:
    return _dump(ast.parse(source, mode="eval").body)


_LAYER = _template(GOLDEN_CONDITION)
_NOT_LAYER = _template("layer_num not in self.deepstack_visual_indexes")
# Calls that read one predicate: ``is_torchdynamo_compiling`` is the name golden imports from
# transformers.utils; it is True under torch.compile as well as under torch.export.
_PREDICATE_CALLS = {
    _template("torch.jit.is_tracing()"): "tracing",
    _template("torch.compiler.is_exporting()"): "exporting",
    _template("is_torchdynamo_compiling()"): "compiling",
}
_ATOMS_TEXT = (
    f'{GOLDEN_CONDITION}, getattr(self, "{FLAG}", False), torch.jit.is_tracing(), '
    "torch.compiler.is_exporting(), is_torchdynamo_compiling()"
)


def _compile(node: ast.expr) -> Callable[[State], bool]:
    """A function of (layer in indexes, flag set, mode) that evaluates ``node`` as an ``if`` does."""
    match node:
        case ast.BoolOp(op=ast.And(), values=values):
            parts = [_compile(v) for v in values]
            return lambda s: all(p(s) for p in parts)
        case ast.BoolOp(op=ast.Or(), values=values):
            parts = [_compile(v) for v in values]
            return lambda s: any(p(s) for p in parts)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            inner = _compile(operand)
            return lambda s: not inner(s)
        case ast.Call(func=ast.Name(id="bool"), args=[arg], keywords=[]):
            return _compile(arg)
        case ast.Constant(value=value) if isinstance(value, bool):
            return lambda s: value
        case _ if _dump(node) == _NOT_LAYER:
            return lambda s: not s[0]
        case _ if _dump(node) == _LAYER:
            return lambda s: s[0]
        case _ if _dump(node) in _PREDICATE_CALLS:
            predicate = _PREDICATE_CALLS[_dump(node)]
            return lambda s: MODES[s[2]][predicate]
        case ast.Call(func=ast.Name(id="getattr"), args=[ast.Name(id="self"), name, default], keywords=[]):
            return _flag(name, default)
        case ast.Attribute(value=ast.Name(id="self"), attr=attr) if attr == FLAG:
            raise UndecidableCondition(
                f"`self.{FLAG}` raises AttributeError while the flag was never set; "
                f'expected getattr(self, "{FLAG}", False)'
            )
    raise UndecidableCondition(
        f"`{ast.unparse(node)}` is none of the inputs ({_ATOMS_TEXT}), so equivalence is not decidable"
    )


def _flag(name: ast.expr, default: ast.expr) -> Callable[[State], bool]:
    """``getattr(self, FLAG, default)``: True when set, the default's truth value when unset."""
    if not (isinstance(name, ast.Constant) and name.value == FLAG):
        raise UndecidableCondition(
            f'reads another flag, `{ast.unparse(name)}`; expected getattr(self, "{FLAG}", False)'
        )
    if not isinstance(default, ast.Constant):
        raise UndecidableCondition(f"the flag's default `{ast.unparse(default)}` is not a constant")
    unset = bool(default.value)
    return lambda s: True if s[1] else unset


def _parse_condition(condition: str | ast.expr) -> ast.expr:
    return ast.parse(condition.strip(), mode="eval").body if isinstance(condition, str) else condition


def deepstack_truth_table(condition: str | ast.expr) -> TruthTable:
    """Whether an ``if`` with ``condition`` runs DeepStack, for each (layer in indexes, flag set, tracing).

    ``tracing`` is ``torch.jit.trace`` (True) or eager mode (False): the report's eight combinations.
    Raises ``UndecidableCondition`` naming the first sub-expression that is not one of the inputs.
    """
    decide = _compile(_parse_condition(condition))
    combos = cast("list[Combination]", list(itertools.product((False, True), repeat=3)))
    return {combo: decide((combo[0], combo[1], REPORT_MODES[combo[2]])) for combo in combos}


def deepstack_mode_table(condition: str | ast.expr) -> ModeTable:
    """Whether ``condition`` runs DeepStack at a DeepStack layer, per (mode of ``MODES``, flag set)."""
    decide = _compile(_parse_condition(condition))
    return {(mode, flag): decide((True, flag, mode)) for mode in MODES for flag in (False, True)}


EXPECTED_TABLE = deepstack_truth_table(MODIFIED_CONDITION)


EXPECTED_MODES = deepstack_mode_table(MODIFIED_CONDITION)


def mode_findings(actual: ModeTable, expected: ModeTable = EXPECTED_MODES) -> tuple[list[str], list[str]]:
    """Problems and notes (sentences with the condition as subject) for the modes beyond the report's
    eight combinations where ``actual`` differs.

    The report's condition runs DeepStack under torch.export and torch.compile unless the flag is
    set, because ``torch.jit.is_tracing()`` is False there. A fork that skips under torch.export
    keeps DeepStack out of every exporter's graph: a note. torch.compile is not an exporter but
    compiled inference, so any difference there changes what users run: a problem.
    """
    problems, notes = [], []
    for mode in MODES:
        if mode in REPORT_MODES:
            continue
        for flag in (False, True):
            if actual[(mode, flag)] == expected[(mode, flag)]:
                continue
            state = f"with the flag {'set' if flag else 'unset'}"
            if mode == "torch.compile":
                does, reference = ("runs", "skips") if actual[(mode, flag)] else ("skips", "runs")
                problems.append(
                    f"{does} DeepStack under torch.compile {state}, where the report's condition {reference} it: "
                    "compiled inference changes"
                )
            elif actual[(mode, flag)]:
                notes.append(f"runs DeepStack under {mode} {state}, where the reference condition skips it")
            else:
                notes.append(
                    f"additionally skips DeepStack under torch.export (torch.export.export, strict and "
                    f"non-strict, and torch.onnx.export(dynamo=True)) {state}, where torch.jit.is_tracing() "
                    "is False and the reference condition runs it"
                )
    return problems, notes


def describe_combination(combo: Combination) -> str:
    """Words for a combination, e.g. "at a layer in ..., while tracing with the flag unset"."""
    layer, flag, tracing = combo
    where = "in" if layer else "outside"
    mode = "while tracing" if tracing else "in eager mode"
    return f"at a layer {where} deepstack_visual_indexes, {mode} with the flag {'set' if flag else 'unset'}"


def describe_disagreements(
    actual: TruthTable, expected: TruthTable = EXPECTED_TABLE, who: str = "the modified file"
) -> list[str]:
    """One sentence per combination where ``actual`` and ``expected`` disagree."""

    def does(run: bool) -> str:
        return "runs" if run else "skips"

    def should(run: bool) -> str:
        return "run" if run else "skip"

    return [
        f"{describe_combination(c)}, {who} {does(actual[c])} DeepStack (expected: {should(expected[c])})"
        for c in sorted(expected)
        if actual[c] != expected[c]
    ]


# The claim: exactly one change, the DeepStack condition, equivalent to the reference.


@dataclass
class DiffReport:
    """All changes between two files and whether they are exactly the report's one change."""

    golden: str
    modified: str
    changes: list[Change]
    problems: list[str]
    family: Family = QWEN3_VL  # golden's: which class holds the DeepStack ``if``
    condition: str | None = None  # the modified DeepStack test, when it changed
    truth_table: TruthTable | None = None
    target: ast.If | None = field(default=None, repr=False)  # golden's DeepStack ``if``
    condition_change: Change | None = None  # the change of that ``if``'s test, if its test changed
    replaced: Change | None = None  # a change that swallowed the whole ``if`` (removed, or rewritten around it)
    condition_problems: list[str] = field(default_factory=list)  # the modified test against the reference
    # the modified test under torch.compile against the reference: compiled inference, beyond the 8
    mode_problems: list[str] = field(default_factory=list)

    @property
    def extra_changes(self) -> list[Change]:
        """Every change but the DeepStack condition."""
        return [c for c in self.changes if c is not self.condition_change]

    @property
    def body_changes(self) -> list[Change]:
        """Changes inside the body of the DeepStack ``if``."""
        return [c for c in self.changes if self.target is not None and self.target in c.within]
    modes: ModeTable | None = None  # the same test under torch.compile and torch.export
    notes: list[str] = field(default_factory=list)  # where it differs from the reference beyond the 8

    @property
    def conforms(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        if self.conforms:
            change = self.changes[0]
            note = f"; note: it {'; it '.join(self.notes)}" if self.notes else ""
            return f"OK: one change, the DeepStack condition at {change.where()}, equivalent to the reference{note}"
        count = f"{len(self.changes)} change{'s' * (len(self.changes) != 1)}"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"FAIL ({count}): {self.problems[0]}{more}"

    def to_dict(self) -> dict[str, Any]:
        table = None
        if self.truth_table is not None:
            table = [
                dict(zip(INPUTS, combo, strict=True)) | {"runs_deepstack": run, "expected": EXPECTED_TABLE[combo]}
                for combo, run in sorted(self.truth_table.items())
            ]
        modes = None
        if self.modes is not None:
            modes = [
                {"mode": mode, "flag_set": flag, "runs_deepstack": run, "reference": EXPECTED_MODES[(mode, flag)]}
                for (mode, flag), run in self.modes.items()
            ]
        return {
            "golden": self.golden,
            "modified": self.modified,
            "conforms": self.conforms,
            "verdict": self.verdict,
            "problems": self.problems,
            "changes": [c.to_dict() for c in self.changes],
            "condition": {"expected": MODIFIED_CONDITION, "found": self.condition, "truth_table": table,
                          "modes": modes, "notes": self.notes},
        }


def find_deepstack_if(tree: ast.Module, *, any_test: bool = False) -> ast.If | None:
    """The ``if layer_num in self.deepstack_visual_indexes:`` inside the vision class's forward
    (``Qwen3VLVisionModel.forward``, or the family's: ``Qwen3VLMoeVisionModel.forward``, ...).

    With ``any_test`` the ``if`` is found by its body instead (the first ``if`` whose body reads
    ``deepstack_merger_list``), whatever its test: that is how a fork's changed ``if`` is found.
    """
    family = family_of(tree)
    for cls in tree.body:
        if family is not None and isinstance(cls, ast.ClassDef) and cls.name == family.vision_class:
            for method in cls.body:
                if isinstance(method, ast.FunctionDef) and method.name == "forward":
                    for node in ast.walk(method):
                        if isinstance(node, ast.If) and (
                            _reads_mergers(node.body) if any_test else _dump(node.test) == _LAYER
                        ):
                            return node
    return None


def _reads_mergers(body: Sequence[ast.stmt]) -> bool:
    return any(
        isinstance(node, ast.Attribute) and node.attr == "deepstack_merger_list"
        for statement in body
        for node in ast.walk(statement)
    )


def check_one_diff(golden: Source | str | os.PathLike[str], modified: Source | str | os.PathLike[str]) -> DiffReport:
    """Compare two files (paths, or texts containing a newline) and judge the one-diff claim; files of
    two families (a Qwen3-VL-MoE fork against Qwen3-VL's golden) cannot be compared: ``SourceError``."""
    g, m = as_source(golden, "<golden>"), as_source(modified, "<modified>")
    family, theirs = family_of(g.tree) or QWEN3_VL, family_of(m.tree)
    if theirs is not None and theirs != family:
        raise SourceError(
            f"{m.label} is a {theirs.name} file (it defines {theirs.vision_class}) and golden {g.label} a "
            f"{family.name} one: compare it with transformers' {theirs.relative_path}"
        )
    changes = diff_sources(g, m)
    report = DiffReport(g.label, m.label, changes, [], family)
    place = family.deepstack_place
    target = find_deepstack_if(g.tree)
    if target is None:
        report.problems.append(f"{g.label} has no `if {GOLDEN_CONDITION}:` in {place}")
        return report
    report.target = target
    condition = next((c for c in changes if c.kind == "condition" and c.golden_nodes == (target,)), None)
    report.condition_change = condition
    if condition is None:
        report.replaced = next((c for c in changes if not c.header and _covers(c.golden_nodes, target)), None)
    if report.replaced is None:
        report.condition_problems = _judge_condition(target, condition, report)
    if not changes:
        report.problems.append(
            f"no change: expected the DeepStack condition at {place} (golden line {target.lineno})"
        )
        return report
    if condition is None:
        report.problems.append(
            f"the DeepStack `if` at {report.replaced.where()} was replaced, not only its test"
            if report.replaced
            else f"the DeepStack condition at {place} (golden line {target.lineno}) is unchanged"
        )
    else:
        report.problems.extend(report.condition_problems + report.mode_problems)
    for change in changes:
        if change is condition or change is report.replaced:
            continue
        if target in change.within:
            report.problems.append(f"the body of the DeepStack `if` changed at {change.where()}")
        else:
            note = f": {change.note}" if change.note else ""
            report.problems.append(f"unexpected change ({change.kind}) at {change.where()}{note}")
    return report


def _covers(nodes: Sequence[ast.AST], target: ast.AST) -> bool:
    return any(node is target for root in nodes for node in ast.walk(root))


def _judge_condition(target: ast.If, change: Change | None, report: DiffReport) -> list[str]:
    """Problems with the DeepStack test the modified file has (golden's, when unchanged); a changed test's
    text and truth table are recorded on ``report``."""
    if change is None:
        test = target.test
        place = report.family.deepstack_place
        prefix = f"the DeepStack condition at {place} (golden line {target.lineno}), unchanged from golden,"
    else:
        test = cast(ast.If, change.modified_nodes[0]).test
        report.condition = ast.unparse(test)
        prefix = f"the DeepStack condition at {change.where()}"
    try:
        table = deepstack_truth_table(test)
        modes = deepstack_mode_table(test)
    except UndecidableCondition as exc:
        return [f"{prefix} is not the reference condition: {exc}"]
    if change is not None:
        mode_problems, report.notes = mode_findings(modes)
        report.truth_table, report.modes = table, modes
        report.mode_problems = [f"{prefix} {problem}" for problem in mode_problems]
    return [f"{prefix} differs from the reference: {d}" for d in describe_disagreements(table)]
