"""The tolerance policy: one table of limits by the arithmetic a file declares, and one output's
measured distance from golden against it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_qwen3vl.errors import SettingsError


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
# with the quantized files. Every file this package makes is judged at "fp32".
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel_l2=1e-5, max_rel=1e-4, cosine=1 - 1e-8),
    "fp16": Tolerance(rel_l2=5e-3, max_rel=1e-2, cosine=1 - 1e-5),
    "bf16": Tolerance(rel_l2=1e-1, max_rel=2e-1, cosine=1 - 5e-3),
    "quantized": Tolerance(rel_l2=1e-1, max_rel=2e-1, cosine=1 - 5e-3),
    # the graph of a quantize_dynamic file against golden holding its dequantized weights: its int8
    # activations alone (measured rel L2 <= 1.7e-2, max_rel 2.0e-2, 1 - cos 1.5e-4 over five seeds, tiny)
    "int8-activations": Tolerance(rel_l2=7e-2, max_rel=1e-1, cosine=1 - 1e-3),
}


def row_for(weights: str, arithmetic: str) -> str:
    """The row a file is judged at on a runtime: its weight type's, or the runtime's arithmetic's when
    that is looser (an fp32 file run in f16 is held to fp16's limits, an int8 file stays quantized)."""
    return max((weights, arithmetic), key=lambda row: TOLERANCES[row].rel_l2)


_RANGES = {"rel_l2": (0.0, math.inf), "max_rel": (0.0, math.inf), "cosine": (-1.0, 1.0)}


def parse_tolerance(text: str) -> dict[str, float]:
    """``rel_l2=1e-4,max_rel=1e-3,cosine=0.99999`` (any subset): finite numbers in each limit's range."""
    overrides: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in _RANGES:
            raise SettingsError(f"{text!r}: unknown limit {key!r} (rel_l2, max_rel, cosine)")
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{text!r}: {key} is not a number") from None
        low, high = _RANGES[key]
        if not (math.isfinite(number) and low <= number <= high):
            raise SettingsError(f"{text!r}: {key} must be a finite number from {low:g} to {high:g}")
        overrides[key] = number
    return overrides


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

    def reason(self) -> str:
        """Why it is outside tolerance, in a few words."""
        if self.nonfinite:
            return f"{self.output}: {self.nonfinite} NaN/Inf"
        return f"{self.output} relative L2 {self.rel_l2:.2g}"


def measure(actual: Any, expected: Any, output: str, golden: str) -> OutputParity:
    """Parity of one output (any float dtype) against golden, in float64; NaN and Inf are counted, then
    read as 0 so the other figures stay finite."""
    import numpy as np

    from pytest_qwen3vl.metrics import cosine, parity

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    nonfinite = int(a.size - np.isfinite(a).sum())
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    p = parity(a, e)
    return OutputParity(output, golden, p.max_abs, p.max_rel, p.rel_l2, cosine(a, e), nonfinite)
