"""Write pytest_qwen3vl/source/fingerprints.json: each family's definitions, per transformers version.

Run it once per transformers version, in an environment where that version is installed from the
registry (``pip install "transformers==X"``): it reads each family's installed modeling file and
the helpers those files import from elsewhere in transformers, and replaces that version's entries;
the other versions' are kept. Only hashes are stored, never the files.
"""

from __future__ import annotations

import ast
import json
import sys

from packaging.version import Version

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.source.coverage import AREAS
from pytest_qwen3vl.source.families import FAMILIES
from pytest_qwen3vl.source.files import installed_golden_path, sha256_file, transformers_dir
from pytest_qwen3vl.source.fingerprints import DATA, DefinitionIndex
from pytest_qwen3vl.versions import transformers_version


def main() -> int:
    version = transformers_version()
    if version is None:
        print("transformers is not installed", file=sys.stderr)
        return 2
    data: dict[str, dict[str, dict[str, object]]] = (
        json.loads(DATA.read_text(encoding="utf-8")) if DATA.is_file() else {}
    )
    for family in FAMILIES.values():
        try:
            path = installed_golden_path(family)
        except SourceError as exc:
            print(f"{family.name}: skipped ({exc})")
            continue
        index = DefinitionIndex(ast.parse(path.read_text(encoding="utf-8")), family, transformers_dir())
        for roots in AREAS.values():
            index.closure(roots(family))  # adds the helpers the areas reach to index.hashes
        data.setdefault(family.name, {})[version] = {
            "sha256": sha256_file(path),
            "definitions": dict(sorted(index.hashes.items())),
        }
        print(f"{family.name} {version}: {len(index.hashes)} definitions from {path}")
    ordered = {
        family: {v: data[family][v] for v in sorted(data[family], key=Version)} for family in FAMILIES if family in data
    }
    DATA.write_text(json.dumps(ordered, indent=0, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {DATA} ({DATA.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
