"""Write pytest_qwen3vl/source/fingerprints.json: the function hashes of each known golden file.

Run it once per transformers version, in an environment where that version is installed (the
installed file is used), or name the files: ``python tools/make_fingerprints.py [PATH ...]``.
Each file must be a known version's, by sha256; its entry is replaced, the others are kept.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from pytest_qwen3vl.source.files import installed_golden_path, sha256_file
from pytest_qwen3vl.source.fingerprints import DATA, fingerprints
from pytest_qwen3vl.source.goldens import KNOWN_GOLDENS, known_versions, version_of_digest


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [installed_golden_path()]
    data = json.loads(DATA.read_text(encoding="utf-8")) if DATA.is_file() else {}
    for path in paths:
        version = version_of_digest(sha256_file(path))
        if version is None:
            print(f"{path}: not a known golden file ({known_versions()})", file=sys.stderr)
            return 2
        data[version] = fingerprints(ast.parse(path.read_text(encoding="utf-8")))
        print(f"{version}: {len(data[version])} functions from {path}")
    ordered = {version: dict(sorted(data[version].items())) for version in KNOWN_GOLDENS if version in data}
    DATA.write_text(json.dumps(ordered, indent=0, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {DATA} ({DATA.stat().st_size} bytes, versions {', '.join(ordered)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
