"""The interface a runtime offers the judge: load a file or say why not, run it on named inputs.

A runtime's own refusal (a file it cannot load, a node it cannot run) is ``RuntimeRefused``: a
finding about the file on that runtime. Anything else a runtime raises is a fault of ours or of the
machine and propagates as it is, so it never reads as a verdict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class Session(ABC):
    """A loaded file, run as often as needed. ``note`` says what the runtime did to the file first, for
    the row (the optimiser's model type), where it did anything."""

    note: str = ""

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``outputs`` (default: every output) by name; raises ``RuntimeRefused`` when the runtime refuses."""


class Runtime(ABC):
    """One runtime at one setting: ``name`` and ``precision`` (in the runtime's own words) are what a row
    says ran; ``arithmetic`` is the row of the tolerance table that precision is judged at."""

    name: str
    precision: str
    arithmetic: str = "fp32"

    @property
    def label(self) -> str:
        return f"{self.name}:{self.precision}"

    def key(self) -> str:
        """What a measurement kept in the cache is keyed by for this runtime: its label, and whatever else
        decides what it computes (genai's folder)."""
        return self.label

    def for_ops(self, ops: Collection[str]) -> Runtime:
        """The runtime as it must load a file holding ``ops``: itself, unless a setting of its own would
        change what such a file computes."""
        return self

    @abstractmethod
    def load(self, path: Path) -> Session:
        """The file loaded (external data next to it loads with it); ``RuntimeRefused`` when it does not load."""

    def load_exposing(self, path: Path, values: Sequence[str]) -> Session | None:
        """The file loaded with its intermediate ``values`` (ONNX value names) as extra outputs, run at this
        runtime's own precision, for locating where a run goes wrong; None where the runtime cannot add
        outputs to a file it loads."""
        return None
