"""The report written again as Markdown, from what one run measured.

Same sections as the one-slide report; each claim carries its status and measured value, and an
erratum stands next to what the report said. A user commits it beside their fork. For each failing
``--qwen3vl-onnx`` file, its drift along the tower (``artefact-where``'s probes: each module's relative
L2 with the file's own weights and against the checkpoint) follows as a table, and as a PNG beside the
Markdown where matplotlib is installed (``pip install pytest-qwen3vl[plot]``; imported only to draw).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_qwen3vl.export.builder import DEFAULT_OPSET
from pytest_qwen3vl.plugin.claims import ERRATUM, FAILS, ClaimRow, summary_counts
from pytest_qwen3vl.plugin.settings import Settings
from pytest_qwen3vl.source.files import golden_label, sha256_file
from pytest_qwen3vl.versions import library_versions

_STATUS_MARK = {"holds": "holds", "erratum": "**erratum**", "fails": "**FAILS**", "xfail": "xfail",
                "not run": "not run"}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.replace("|", "\\|").split())


EXPORTER = (f"TorchScript (`torch.onnx.export(..., dynamo=False)`), opset {DEFAULT_OPSET}, constant folding; "
            "the dynamo exporter is tried by claim `dynamo-export`")


def context_lines(settings: Settings) -> list[str]:
    """What the run was: files, config, grids, seed, exporter, library versions."""
    golden = settings.golden
    golden_text = f"`{golden}` (sha256 `{sha256_file(golden)[:16]}…`)" if golden else "not found"
    versions = ", ".join(f"{name} {version}" for name, version in library_versions().items())
    return [
        f"- Golden: {golden_label(golden)} {golden_text}",
        f"- Modified: {settings.modified_label}",
        f"- Config: `{settings.model.name}`; grids: {', '.join(f'`{g.id}`' for g in settings.grids)}; "
        f"seed {settings.seed}",
        f"- Exporter: {EXPORTER}",
        f"- Libraries: {versions}",
    ]


Profile = Mapping[str, Any]  # ``ArtefactCheck.profile(...).to_dict()`` with the file's name under "file"


def _drift(value: float | str | None, limit: float) -> str:
    """One cell: a relative L2 (bold outside ``limit``), or why there is none."""
    if value is None:
        return "not computed"
    if isinstance(value, str):
        return f"not this module's output ({value})"
    return f"**{value:.2g}**" if value > limit else f"{value:.2g}"


def _where(first: str | None, limit: float, problem: str | None) -> str:
    if problem is not None:
        return f"not located ({problem})"
    return f"drift starts at `{first}`" if first else f"every module within {limit:g}"


def image_name(report: Path, profile: Profile) -> str:
    """The PNG beside ``report`` for one file's profile: ``<report stem>-<file>-<grid>.png``."""
    return f"{report.stem}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', str(profile['file']))}-{profile['grid']}.png"


def drift_lines(profiles: Sequence[Profile], images: Mapping[int, str] | None) -> list[str]:
    """The section on failing files' drift along the tower: a table per file, and its image where drawn
    (``images``: profile index to file name; None: matplotlib is not installed)."""
    if not profiles:
        return []
    lines = ["", "## Where your files drift, module by module", "",
             "Relative L2 of each module's output along the vision tower, on the first failing grid: with the "
             "file's own weights (golden holding them: the graph) and against the checkpoint (what is shipped). "
             "Bold: outside the limit."]
    if images is None:
        lines += ["", "Install `pytest-qwen3vl[plot]` (matplotlib) to draw these as images next to this file."]
    for index, profile in enumerate(profiles):
        graph, against = float(profile["graph_limit"]), float(profile["checkpoint_limit"])
        lines += ["", f"### `{profile['file']}` on {profile['grid']}", "",
                  f"With its own weights: {_where(profile['first_graph'], graph, profile['problem'])}; against the "
                  f"checkpoint: {_where(profile['first_checkpoint'], against, profile['problem'])}"
                  + (f"; the run stops at {profile['failure']}" if profile["failure"] else "") + ".", ""]
        lines += [f"| module | with its own weights (limit {graph:g}) | against the checkpoint (limit {against:g}) |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | {_drift(own, graph)} | {_drift(shipped, against)} |"
                  for name, own, shipped in profile["modules"]]
        if images is not None and index in images:
            lines += ["", f"![drift along the tower of {profile['file']}]({images[index]})"]
    return lines


def draw_profile(profile: Profile, path: Path) -> None:
    """Both curves on a log scale, module by module, with each limit dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all that is drawn
    import matplotlib.pyplot as plt

    names = [name for name, _, _ in profile["modules"]]

    def series(column: int) -> list[float]:
        return [max(float(row[column]), 1e-12) if isinstance(row[column], (int, float)) else math.nan
                for row in profile["modules"]]

    figure, axes = plt.subplots(figsize=(max(6.0, 0.45 * len(names)), 3.6))
    try:
        # the first curve drawn wider, so it shows where the two coincide (a graph bug)
        for column, label, limit, colour, width, marker in (
                (1, "with its own weights", "graph_limit", "tab:blue", 4.0, "o"),
                (2, "against the checkpoint", "checkpoint_limit", "tab:red", 1.4, "s")):
            axes.plot(range(len(names)), series(column), marker=marker, label=label, color=colour, linewidth=width)
            axes.axhline(float(profile[limit]), linestyle="--", linewidth=0.8, color=colour)
        axes.set_yscale("log")
        axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        axes.set_ylabel("relative L2")
        axes.set_title(f"{profile['file']} on {profile['grid']}", fontsize=9)
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)


def render_report(rows: Iterable[ClaimRow], settings: Settings, when: _dt.datetime,
                  profiles: Sequence[Profile] = (), images: Mapping[int, str] | None = None) -> str:
    """The whole Markdown document."""
    rows = list(rows)
    counts = ", ".join(f"{n} {status}" for status, n in summary_counts(rows).items())
    lines = [
        "# Qwen3-VL Modeling Diff: the report, as measured",
        "",
        f"Regenerated by pytest-qwen3vl on {when:%Y-%m-%d %H:%M} UTC from what this run measured. "
        f"Claims: {counts}.",
        "",
        *context_lines(settings),
    ]
    section = None
    for row in rows:
        if row.claim.section != section:
            section = row.claim.section
            lines += ["", f"## {section}", "", "| # | claim | the report says | status | measured |",
                      "|---|---|---|---|---|"]
        said = row.claim.statement
        if row.status == ERRATUM and row.reported:
            said += f" (value: {'; '.join(row.reported)})"
        measured = "<br>".join(_cell(m) for m in row.measured) or "-"
        lines.append(f"| {row.claim.number} | `{row.claim.id}` | {_cell(said)} | {_STATUS_MARK[row.status]} | "
                     f"{measured} |")
    lines += drift_lines(profiles, images)
    errata = [row for row in rows if row.status == ERRATUM]
    failures = [row for row in rows if row.status == FAILS]
    if errata:
        lines += ["", "## Errata", ""]
        lines += [f"- `{row.claim.id}`: the report says {row.claim.statement!r}"
                  f"{' (' + '; '.join(row.reported) + ')' if row.reported else ''}; "
                  f"measured: {'; '.join(row.measured)}." for row in errata]
    if failures:
        lines += ["", "## Claims the modified file breaks", ""]
        lines += [f"- `{row.claim.id}`: {'; '.join(row.measured)} (tests: {', '.join(row.tests)})"
                  for row in failures]
    return "\n".join(lines) + "\n"


def write_report(path: Path, rows: Iterable[ClaimRow], settings: Settings, profiles: Sequence[Profile] = ()) -> Path:
    """Write the report, and each profile's image beside it where matplotlib is installed; the folder
    is made if needed."""
    import importlib.util

    path.parent.mkdir(parents=True, exist_ok=True)
    images: dict[int, str] | None = None
    if importlib.util.find_spec("matplotlib") is not None:
        images = {}
        for index, profile in enumerate(profiles):
            images[index] = image_name(path, profile)
            draw_profile(profile, path.parent / images[index])
    path.write_text(render_report(rows, settings, _dt.datetime.now(_dt.timezone.utc), profiles, images),
                    encoding="utf-8")
    return path
