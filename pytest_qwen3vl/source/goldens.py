"""The transformers versions whose ``modeling_qwen3_vl.py`` the project has measured, by sha256.

A golden file whose hash is listed here is *verified*: the suite's expectations and errata were
measured on exactly that text. The report was written against ``REPORT_VERSION``.
"""

from __future__ import annotations

REPORT_VERSION = "4.57.6"

# version -> sha256 of its models/qwen3_vl/modeling_qwen3_vl.py (from the released wheel)
KNOWN_GOLDENS: dict[str, str] = {
    "4.57.6": "dd63ed3b124232735b3dca1bfa28f9d6b0d3f7182afcb75dde8f3e724b2b22da",
    "5.23.0": "626f3940d3101806a4a7522c1cf706f968890509df697330896d7a70841dcc40",
}

_BY_DIGEST = {digest: version for version, digest in KNOWN_GOLDENS.items()}


def version_of_digest(digest: str) -> str | None:
    """The known transformers version whose golden file has this sha256, or None."""
    return _BY_DIGEST.get(digest)


def known_versions() -> str:
    """The verified versions, for messages: ``4.57.6, 5.23.0``."""
    return ", ".join(KNOWN_GOLDENS)
