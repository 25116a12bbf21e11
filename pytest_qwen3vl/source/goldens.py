"""The transformers versions the suite was measured on, per family.

A golden file of a *verified* version (``VERIFIED``, matched by the sha256 that
``fingerprints.json`` stores for it) is the text the suite's expectations and errata were measured
on. Other released files are *known* (their definitions are stored, so a fork's origin is found and
a claim that reads only unchanged definitions is verified through a verified version's), and the
installed file of any other version runs, each claim saying whether what it reads changed.
The report was written against ``REPORT_VERSION``.
"""

from __future__ import annotations

REPORT_VERSION = "4.57.6"

# family -> the versions whose whole suite was run and whose errata were measured, oldest first
VERIFIED: dict[str, tuple[str, ...]] = {
    # 5.25.0: its vision definitions differ from 5.23.0's only where the claims do not reach
    # (tools/vision_across_versions.py, docs/versions.md)
    "qwen3_vl": ("4.57.6", "5.23.0", "5.25.0"),
    # the whole suite on the reference change applied to each family's file: the same errata as
    # qwen3_vl's under each version (docs/versions.md)
    "qwen3_vl_moe": ("4.57.6", "5.23.0", "5.25.0"),
    "qwen3_omni_moe": ("4.57.6", "5.23.0", "5.25.0"),
}


def verified_versions(family: str) -> tuple[str, ...]:
    """The verified versions of a family's file (none for a family not yet measured)."""
    return VERIFIED.get(family, ())


def known_versions(family: str = "qwen3_vl") -> str:
    """The verified versions, for messages: ``4.57.6, 5.23.0``."""
    return ", ".join(verified_versions(family)) or "none yet"
