"""How far one array is from another: the numbers every comparison of the package is made of.

Pure numpy, below everything else: making (the grid-free replacements checked against a model's own
forward) and judging (files against golden) measure with the same functions. numpy is imported
inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parity:
    """How far an output is from the reference.

    ``max_rel`` is the largest absolute error over the largest reference magnitude, which stays
    meaningful where single reference values are near zero; ``rel_l2`` is ``|a - e| / |e|`` in L2.
    """

    max_abs: float
    max_rel: float
    rel_l2: float


def parity(actual: Any, expected: Any) -> Parity:
    """Errors of ``actual`` against ``expected`` (arrays or tensors of the same shape), in float64."""
    import numpy as np

    a = np.asarray(as_numpy(actual), dtype=np.float64)
    e = np.asarray(as_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: actual {a.shape}, expected {e.shape}")
    diff = np.abs(a - e)
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(e).max(initial=0.0))
    norm = float(np.linalg.norm(e))
    return Parity(
        max_abs=max_abs,
        max_rel=max_abs / scale if scale else max_abs,
        rel_l2=float(np.linalg.norm(a - e)) / norm if norm else float(np.linalg.norm(a - e)),
    )


def cosine(a: Any, b: Any) -> float:
    """Cosine of two same-shape arrays, flattened, in float64."""
    import numpy as np

    x = np.asarray(as_numpy(a), dtype=np.float64).ravel()
    y = np.asarray(as_numpy(b), dtype=np.float64).ravel()
    norms = float(np.linalg.norm(x)) * float(np.linalg.norm(y))
    return float(x @ y) / norms if norms else 0.0


def as_numpy(value: Any) -> Any:
    """A torch tensor as a numpy array (without importing torch); anything else as it is."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value
