"""Hashes of a modeling file's definitions: which version a fork was made from, and what a claim reads.

Each known version's definitions are hashed once (``tools/make_fingerprints.py`` writes
``fingerprints.json``, per family and version): every top-level function, every method, and each
class's own statements (bases, decorators, attributes), so that one edit changes one entry. A fork
whose definitions match one version's hashes and none of another's was made from that version,
whatever its one change is. A claim reads the definitions reachable from its roots (see
``pytest_qwen3vl.source.coverage``), including helpers the file imports from elsewhere in
transformers (``transformers.vision_utils`` in 5.x), which are stored under their module's name.

The hash is of a canonical dump of the syntax tree that leaves out empty and None fields:
``ast.dump`` itself prints differently on Python 3.11, 3.12 (``type_params``) and 3.13 (empty
fields omitted), so its hashes would not travel between interpreters.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pytest_qwen3vl.source.families import Family

DATA = Path(__file__).with_name("fingerprints.json")
HASH_CHARS = 16
# A fork is "made from V" when V's hashes account for this share of its recognised definitions
# (the rest being its own edits) and no other version's hash matches any of them.
MAJORITY = 0.8
# Helpers from other transformers modules are stored as ``transformers.<module>.<function>``.
HELPER_PREFIX = "transformers."
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _canonical(node: object) -> str:
    """A dump of a syntax tree that is the same on every Python version this package supports."""
    if isinstance(node, ast.AST):
        fields = ",".join(
            f"{name}={_canonical(value)}" for name, value in ast.iter_fields(node) if value is not None and value != []
        )
        return f"{type(node).__name__}({fields})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


def _hash(node: ast.AST) -> str:
    return hashlib.sha256(_canonical(node).encode("utf-8")).hexdigest()[:HASH_CHARS]


def _own_part(node: ast.AST) -> ast.AST:
    """A class without its methods and nested classes: what is left are its own statements."""
    if not isinstance(node, ast.ClassDef):
        return node
    bare = copy.copy(node)
    bare.body = [statement for statement in node.body if not isinstance(statement, _DEFS)]
    return bare


def _definition_nodes(tree: ast.Module) -> dict[str, ast.AST]:
    """``{qualname: node}``: functions, methods (nested classes included) and classes' own parts."""
    out: dict[str, ast.AST] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, _DEFS):
                out[prefix + node.name] = _own_part(node)
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return out


def fingerprints(tree: ast.Module) -> dict[str, str]:
    """``{qualname: hash}`` of every definition of ``tree`` (helpers of other modules not included)."""
    return {name: _hash(node) for name, node in _definition_nodes(tree).items()}


def _reads(node: ast.AST) -> set[str]:
    """Names a definition calls, decorates with or derives from: what it runs, not what it mentions."""
    names: set[str] = set()
    own = [node] if not isinstance(node, ast.ClassDef) else [*node.bases, *node.decorator_list, *node.body]
    for root in own:
        for sub in ast.walk(root):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                names.add(sub.func.id)
    decorators = getattr(node, "decorator_list", [])
    bases = node.bases if isinstance(node, ast.ClassDef) else []
    names.update(d.id for d in [*decorators, *bases] if isinstance(d, ast.Name))
    return names


def _imports(tree: ast.Module, family: Family) -> dict[str, str]:
    """``{name: absolute module}`` of the file's ``from X import name`` statements, relative ones
    resolved inside the family's package."""
    parts = family.package.split(".")
    out: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = [*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])]
            module = ".".join(base)
        else:
            module = node.module or ""
        for alias in node.names:
            out[alias.asname or alias.name] = module
    return out


@cache
def _module_functions(path: Path) -> dict[str, str]:
    """``{name: hash}`` of a module file's top-level functions."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return {}
    return {n.name: _hash(n) for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _module_file(transformers_dir: Path, module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    for candidate in (transformers_dir / relative.with_suffix(".py"), transformers_dir / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class DefinitionIndex:
    """A golden file's definitions, their hashes, and what each one runs, for a claim's closure.

    ``transformers_dir`` is the installed transformers package: the helpers a copy of the file
    imports resolve there at run time, so that is where their definitions are read.
    """

    def __init__(self, tree: ast.Module, family: Family, transformers_dir: Path | None) -> None:
        self.nodes = _definition_nodes(tree)
        self.hashes = {name: _hash(node) for name, node in self.nodes.items()}
        self._imports = _imports(tree, family)
        self._dir = transformers_dir
        self._top = {name for name in self.nodes if "." not in name}

    def _entries(self, root: str) -> list[str]:
        """A root's entries: a method alone, or a class with all its methods."""
        if "." in root:
            return [root] if root in self.nodes else []
        return [name for name in self.nodes if name == root or name.startswith(root + ".")]

    def _helper(self, name: str) -> str | None:
        """``transformers.<module>.<name>`` when ``name`` is a function imported from transformers."""
        module = self._imports.get(name, "")
        if self._dir is None or not module.startswith(HELPER_PREFIX):
            return None
        path = _module_file(self._dir, module)
        digest = _module_functions(path).get(name) if path else None
        if digest is None:
            return None
        key = f"{module}.{name}"
        self.hashes[key] = digest
        return key

    def closure(self, roots: Iterable[str]) -> dict[str, str]:
        """``{name: hash}`` of the roots and every definition or helper they run, transitively."""
        seen: set[str] = set()
        todo = [entry for root in roots for entry in self._entries(root)]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name.startswith(HELPER_PREFIX):
                continue
            for read in _reads(self.nodes[name]):
                if read in self._top:
                    todo.extend(self._entries(read))
                elif (helper := self._helper(read)) is not None:
                    todo.append(helper)
        return {name: self.hashes[name] for name in sorted(seen)}


@dataclass(frozen=True)
class KnownFile:
    """A released file of one family and version: its sha256 and its definitions' hashes."""

    version: str
    sha256: str
    definitions: dict[str, str]


@cache
def known_files() -> dict[str, dict[str, KnownFile]]:
    """``{family: {version: KnownFile}}`` as shipped with the package, oldest version first."""
    data = json.loads(DATA.read_text(encoding="utf-8"))
    return {
        family: {version: KnownFile(version, entry["sha256"], entry["definitions"]) for version, entry in by.items()}
        for family, by in data.items()
    }


def known_file_of_digest(digest: str) -> tuple[str, KnownFile] | None:
    """``(family, KnownFile)`` of the released file with this sha256, or None."""
    for family, by_version in known_files().items():
        for known in by_version.values():
            if known.sha256 == digest:
                return family, known
    return None


@dataclass(frozen=True)
class Vote:
    """How a file's definitions match the candidate versions: per version, those matching it alone."""

    votes: dict[str, int]
    neither: int  # known names whose hash matches no version: the fork's own edits, or a third version

    @property
    def made_from(self) -> str | None:
        """The one version the file was made from, when the vote leaves no doubt."""
        total = sum(self.votes.values()) + self.neither
        winners = [version for version, count in self.votes.items() if count]
        if len(winners) != 1 or self.votes[winners[0]] < MAJORITY * total:
            return None
        return winners[0]


def vote(tree: ast.Module, candidates: dict[str, dict[str, str]]) -> Vote:
    """Count each definition of ``tree`` for the single candidate version whose hash it has."""
    votes = dict.fromkeys(candidates, 0)
    neither = 0
    for name, digest in fingerprints(tree).items():
        having = [version for version, table in candidates.items() if name in table]
        if not having:
            continue
        matching = [version for version in having if candidates[version][name] == digest]
        if len(matching) == 1:
            votes[matching[0]] += 1
        elif not matching:
            neither += 1
    return Vote(votes, neither)


def candidates(family: Family, golden: ast.Module, golden_version: str) -> dict[str, dict[str, str]]:
    """Every known version's definitions of ``family``, with the golden file's own in place of its
    version's: a fork is then placed against whatever version is installed, known or not."""
    known = {version: dict(file.definitions) for version, file in known_files().get(family.name, {}).items()}
    return known | {golden_version: fingerprints(golden)}


def version_mismatch(modified: ast.Module, golden: ast.Module, golden_version: str, family: Family) -> str | None:
    """One line when ``modified`` was made from another version than golden's, else None."""
    result = vote(modified, candidates(family, golden, golden_version))
    origin = result.made_from
    if origin is None or origin == golden_version:
        return None
    recognised = sum(result.votes.values()) + result.neither
    return (
        f"made from transformers {origin}, checked against installed {golden_version}: "
        f"{result.votes[origin]} of its {recognised} known definitions are {origin}'s and none is "
        f"{golden_version}'s, so a diff would list every change between the versions; run it where "
        f"transformers {origin} is installed (pip install 'transformers=={origin}'), or make the change "
        f"again on {golden_version}'s file"
    )


def fork_mismatch(modified: Path, golden: Path, golden_version: str, family: Family) -> str | None:
    """``version_mismatch`` for files on disk; a file that does not parse is left to the diff to report."""
    try:
        trees = [ast.parse(path.read_text(encoding="utf-8")) for path in (modified, golden)]
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    return version_mismatch(trees[0], trees[1], golden_version, family)
