"""Which transformers version a fork was made from, told by the hashes of its functions.

A fork made from one version and compared with another differs in dozens of functions that the
fork's author never touched. Each known version's functions are hashed once
(``tools/make_fingerprints.py`` writes ``fingerprints.json``); a fork whose functions match one
version's hashes and none of another's was made from that version, whatever its one change is.

The hash is of a canonical dump of the function's syntax tree that leaves out empty and None
fields: ``ast.dump`` itself prints differently on Python 3.11, 3.12 (``type_params``) and 3.13
(empty fields omitted), so its hashes would not travel between interpreters.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("fingerprints.json")
HASH_CHARS = 16
# A fork is "made from V" when V's hashes account for this share of its recognised functions
# (the rest being its own edits) and no other version's hash matches any of them.
MAJORITY = 0.8


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


def fingerprints(tree: ast.Module) -> dict[str, str]:
    """``{qualname: hash}`` of every top-level function and method (nested classes included)."""
    out: dict[str, str] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                digest = hashlib.sha256(_canonical(node).encode("utf-8")).hexdigest()
                out[prefix + node.name] = digest[:HASH_CHARS]
            elif isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return out


@cache
def known_fingerprints() -> dict[str, dict[str, str]]:
    """``{version: {qualname: hash}}`` of the measured versions, as shipped with the package."""
    data: dict[str, dict[str, str]] = json.loads(DATA.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class Vote:
    """How a file's functions match the known versions: per version, those matching it alone."""

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


def vote(tree: ast.Module) -> Vote:
    """Count each function of ``tree`` for the single known version whose hash it has."""
    known = known_fingerprints()
    votes = dict.fromkeys(known, 0)
    neither = 0
    for name, digest in fingerprints(tree).items():
        having = [version for version, table in known.items() if name in table]
        if not having:
            continue
        matching = [version for version in having if known[version][name] == digest]
        if len(matching) == 1:
            votes[matching[0]] += 1
        elif not matching:
            neither += 1
    return Vote(votes, neither)


def version_mismatch(modified: ast.Module, golden_version: str) -> str | None:
    """One line when ``modified`` was made from another known version than ``golden_version``, else None."""
    if golden_version not in known_fingerprints():
        return None  # an unverified golden: a fork of it would be counted as made from another version
    result = vote(modified)
    origin = result.made_from
    if origin is None or origin == golden_version:
        return None
    recognised = sum(result.votes.values()) + result.neither
    return (
        f"made from transformers {origin}, checked against installed {golden_version}: "
        f"{result.votes[origin]} of its {recognised} known functions are {origin}'s and none is "
        f"{golden_version}'s, so a diff would list every change between the versions; run it where "
        f"transformers {origin} is installed (pip install 'transformers=={origin}'), or make the change "
        f"again on {golden_version}'s file"
    )


def fork_mismatch(modified: Path, golden_version: str) -> str | None:
    """``version_mismatch`` for a file on disk; a file that does not parse is left to the diff to report."""
    try:
        tree = ast.parse(modified.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    return version_mismatch(tree, golden_version)
