"""Console scripts. ``qwen3vl-diff`` checks a fork's modeling file on every commit, without torch.

Exit codes: 0 the file is golden plus exactly the report's DeepStack condition, 1 anything else,
2 the files could not be compared (missing file, syntax error).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.source.diff import Change, DiffReport, check_one_diff
from pytest_qwen3vl.source.files import GoldenFile, check_golden, installed_golden_path
from pytest_qwen3vl.source.fingerprints import fork_mismatch

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@$")


def _unified(change: Change, golden: str, modified: str) -> Iterator[str]:
    """The change as a unified diff whose headers and hunk ranges carry the files' own line numbers."""
    g_start, m_start = change.golden_line, change.modified_line
    lines = difflib.unified_diff(
        change.golden_source.splitlines(),
        change.modified_source.splitlines(),
        f"{golden}:{g_start}" if g_start else f"{golden} (absent)",
        f"{modified}:{m_start}" if m_start else f"{modified} (absent)",
        lineterm="",
    )
    for line in lines:
        hunk = _HUNK.match(line)
        if hunk:
            g = int(hunk[1]) + (g_start - 1 if g_start else 0)
            m = int(hunk[3]) + (m_start - 1 if m_start else 0)
            line = f"@@ -{g}{hunk[2] or ''} +{m}{hunk[4] or ''} @@"
        yield line


def render(report: DiffReport) -> str:
    """Changes grouped by place, each as a unified diff, then the problems and the verdict line."""
    out: list[str] = []
    places = dict.fromkeys(c.place for c in report.changes)
    for place in places:
        out.append(f"== {place} ==")
        for change in (c for c in report.changes if c.place == place):
            out.append(f"{change.kind}{': ' + change.note if change.note else ''}")
            out.extend(_unified(change, report.golden, report.modified))
            out.append("")
    out.extend(f"problem: {p}" for p in report.problems)
    out.append(report.verdict)
    return "\n".join(out)


def _golden_check(path: Path) -> tuple[GoldenFile | None, str | None]:
    """The golden file's version, and a warning line when it is not a verified one: the verdict means less."""
    try:
        golden = check_golden(path)
    except SourceError as exc:
        return None, f"warning: {exc}"
    return golden, None if golden.verified else f"warning: golden is {golden.label}"


def diff_main(argv: Sequence[str] | None = None) -> int:
    """``qwen3vl-diff [--golden PATH] [--json] MODIFIED``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="qwen3vl-diff",
        description="Check that MODIFIED is the golden modeling_qwen3_vl.py plus exactly the DeepStack "
        "export condition. Exit 0: yes; 1: no; 2: could not compare.",
    )
    parser.add_argument("modified", metavar="MODIFIED", type=Path, help="the modified modeling file")
    parser.add_argument("--golden", type=Path, help="the golden file (default: the installed transformers' file)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        golden = args.golden or installed_golden_path()
        report = check_one_diff(golden, args.modified)
    except SourceError as exc:
        print(exc, file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc)}))
        return 2
    known, warning = _golden_check(golden)
    if warning:
        print(warning, file=sys.stderr)
    mismatch = fork_mismatch(args.modified, known.version) if known else None
    if mismatch:
        line = f"FAIL: {args.modified} was {mismatch}"
        print(json.dumps({"error": line, "conforms": False}) if args.json else line)
        return 1
    if args.json:
        print(json.dumps(report.to_dict() | {"warnings": [warning] if warning else []}, indent=2))
    else:
        print(render(report))
    return 0 if report.conforms else 1


if __name__ == "__main__":
    sys.exit(diff_main())
