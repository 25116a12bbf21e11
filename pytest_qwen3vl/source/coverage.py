"""Which claims a golden file is verified for, by what each claim reads rather than by the file's hash.

Every transformers release changes ``modeling_qwen3_vl.py`` somewhere, while the vision tower the
report is about rarely changes. A claim reads an *area*: the definitions reachable from its roots
(``fingerprints.DefinitionIndex.closure``). An installed file whose area is identical, definition
by definition, to a verified version's is verified for the claims reading that area; a claim whose
area changed still runs and its row names what changed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_qwen3vl.source.families import Family
from pytest_qwen3vl.source.fingerprints import HELPER_PREFIX, DefinitionIndex, known_files
from pytest_qwen3vl.source.goldens import verified_versions

# area -> its roots in a family's file; a claim names the area it reads in the catalogue
AREAS: dict[str, Callable[[Family], tuple[str, ...]]] = {
    "vision": lambda family: (family.vision_class,),
    "output": lambda family: (family.deepstack_place,),
    "text-mrope": lambda family: (family.text_rotary, family.rope_index),
    "whole": lambda family: (family.whole,),
}
AREA_WORDS = {
    "vision": "vision definitions",
    "output": "the vision forward",
    "text-mrope": "text rotary embedding and rope index",
    "whole": "whole-model definitions",
}
SHOWN = 6  # changed names listed in a line before "and N more"


@dataclass(frozen=True)
class AreaCheck:
    """One area of a golden file against the verified versions of its family."""

    area: str
    same_as: str | None  # the newest verified version whose definitions here are identical
    nearest: str | None  # the verified version with the fewest differing definitions here
    changed: tuple[str, ...] = ()  # against ``nearest``: changed, added or removed definitions


@dataclass(frozen=True)
class Coverage:
    """Each area's check, and the top-level definitions that differ from the vision match."""

    family: Family
    version: str
    areas: dict[str, AreaCheck]
    changed_top: tuple[str, ...] = field(default=())

    def line(self) -> str:
        """``vision definitions identical to 5.23.0's; changed: Qwen3VLTextAttention, ...``."""
        vision = self.areas["vision"]
        if vision.nearest is None:
            return f"no verified version of {self.family.name} to compare with"
        if vision.same_as is not None:
            head = f"vision definitions identical to {vision.same_as}'s"
        else:
            head = f"vision definitions differ from {vision.nearest}'s: {_names(vision.changed)}"
        changed = _names(self.changed_top) if self.changed_top else "nothing else"
        return f"{head}; changed: {changed}"

    def unverified(self, area: str) -> str | None:
        """Why a claim reading ``area`` is not verified, or None when it is."""
        check = self.areas[area]
        if check.same_as is not None:
            return None
        if check.nearest is None:
            return f"unverified: no verified transformers version of {self.family.name}"
        return (
            f"unverified on transformers {self.version}: {AREA_WORDS[area]} changed since {check.nearest} "
            f"({_names(check.changed)})"
        )


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _differing(mine: dict[str, str], theirs: dict[str, str]) -> tuple[str, ...]:
    """Names of ``mine`` whose hash differs from ``theirs`` or that ``theirs`` lacks."""
    return tuple(name for name, digest in mine.items() if theirs.get(name) != digest)


def coverage(golden: Path, family: Family, version: str, transformers_dir: Path | None) -> Coverage:
    """Compare each area of ``golden`` with the stored definitions of its family's verified versions."""
    index = DefinitionIndex(ast.parse(golden.read_text(encoding="utf-8")), family, transformers_dir)
    stored = known_files().get(family.name, {})
    verified = [v for v in verified_versions(family.name) if v in stored]
    areas: dict[str, AreaCheck] = {}
    for area, roots in AREAS.items():
        mine = index.closure(roots(family))
        diffs = {v: _differing(mine, stored[v].definitions) for v in verified}
        same = [v for v in verified if not diffs[v]]
        nearest = min(reversed(verified), key=lambda v: len(diffs[v]), default=None)
        areas[area] = AreaCheck(area, same[-1] if same else None, nearest, diffs[nearest] if nearest else ())
    match = areas["vision"].same_as or areas["vision"].nearest
    changed_top: tuple[str, ...] = ()
    if match is not None:
        theirs = stored[match].definitions
        mine_all = {name: digest for name, digest in index.hashes.items() if not name.startswith(HELPER_PREFIX)}
        gone = [name for name in theirs if name not in mine_all and not name.startswith(HELPER_PREFIX)]
        changed = [*_differing(mine_all, theirs), *gone]
        changed_top = tuple(dict.fromkeys(name.split(".")[0] for name in changed))
    return Coverage(family, version, areas, changed_top)
