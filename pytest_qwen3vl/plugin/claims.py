"""What tests measured about each claim, carried from xdist workers to the controller, and the table.

A test tied to a claim records measurements into ``item.user_properties``; pytest copies those
into every report and xdist ships reports to the controller, so the board is complete under
``-n auto`` without a side channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from pytest_qwen3vl.errors import UnknownClaim
from pytest_qwen3vl.plugin.catalogue import BY_ID, CATALOGUE, Claim

if TYPE_CHECKING:
    from pytest_qwen3vl.model.inputs import VisionInputs

IDS_PROPERTY = "qwen3vl_claims"
MEASURED_PROPERTY = "qwen3vl_measured"
PROFILE_PROPERTY = "qwen3vl_profile"  # a failing file's drift along the tower, for --qwen3vl-report

HOLDS = "holds"
ERRATUM = "erratum"
FAILS = "fails"
XFAIL = "xfail"
NOT_RUN = "not run"


def claim_ids(item: pytest.Item) -> list[str]:
    """The claim ids of an item's ``qwen3vl_claim`` markers, checked against the catalogue."""
    ids = [str(arg) for marker in item.iter_markers("qwen3vl_claim") for arg in marker.args]
    for claim_id in ids:
        if claim_id not in BY_ID:
            raise UnknownClaim(f"{item.nodeid}: qwen3vl_claim({claim_id!r}) is not in the claim catalogue")
    return ids


class ClaimRecorder:
    """The ``qwen3vl_record`` fixture: a test states what it measured for its claim(s)."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item
        self.ids = claim_ids(item)

    def _claim(self, claim: str | None) -> str:
        if claim is None:
            if len(self.ids) != 1:
                raise UnknownClaim(f"{self._item.nodeid}: name the claim; this test decides {self.ids}")
            return self.ids[0]
        if claim not in self.ids:
            raise UnknownClaim(f"{self._item.nodeid}: not marked qwen3vl_claim({claim!r})")
        return claim

    def on_grids(self, inputs: Sequence[VisionInputs], check: Callable[[VisionInputs], str]) -> None:
        """Run ``check`` on each grid's inputs: holds (naming the grids) when it passes on all, else
        fail naming the grids where it does not. Behaviour that depends on the grid cannot be
        supported by one square grid."""
        held: list[tuple[str, str]] = []
        failed: list[str] = []
        for x in inputs:
            try:
                held.append((x.grid.id, check(x)))
            except (AssertionError, pytest.fail.Exception) as exc:
                failed.append(f"{x.grid.id}: {next(iter(str(exc).strip().splitlines()), 'failed')}")
        if failed:
            where = f"; holds on {', '.join(g for g, _ in held)}" if held else ""
            pytest.fail(f"fails on {len(failed)} of {len(inputs)} grids: {'; '.join(failed)}{where}", pytrace=False)
        self.holds(f"holds on {len(held)} grids ({', '.join(g for g, _ in held)}); {held[0][1]}")

    def holds(self, measured: object, *, claim: str | None = None) -> None:
        """Record what was measured where it agrees with the report."""
        self._add(self._claim(claim), HOLDS, measured, None)

    def claim(
        self, *, reported: object, measured: object, detail: str = "", said: str = "", claim: str | None = None
    ) -> None:
        """Compare the report's value with the measured one and record holds or erratum accordingly.

        The values are compared as values (``==``), never as text, so an erratum turns into holds by
        itself the day the report (or the model) changes. ``detail`` is shown as what was measured
        (default: the measured value), ``said`` as what the report says (default: the reported value).
        """
        claim_id = self._claim(claim)
        shown = detail or str(measured)
        if reported == measured:
            self._add(claim_id, HOLDS, shown, None)
        else:
            self._add(claim_id, ERRATUM, shown, said or str(reported))

    def profile(self, file: str, profile: Mapping[str, object]) -> None:
        """Record a failing file's per-module drift (``Profile.to_dict``) for the Markdown report."""
        self._item.user_properties.append((PROFILE_PROPERTY, {"file": file, **profile}))

    def _add(self, claim_id: str, kind: str, measured: object, reported: object | None) -> None:
        entry = {"claim": claim_id, "kind": kind, "measured": str(measured)}
        if reported is not None:
            entry["reported"] = str(reported)
        self._item.user_properties.append((MEASURED_PROPERTY, entry))


@dataclass
class ClaimRow:
    """One line of the claims table."""

    claim: Claim
    status: str = NOT_RUN
    measured: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)


@dataclass
class ClaimBoard:
    """Every claim's outcome across all tests of the run, built on the controller from reports."""

    outcomes: dict[str, list[tuple[str, str, str, str | None]]] = field(default_factory=dict)
    profiles: list[dict[str, object]] = field(default_factory=list)

    def add_report(self, report: pytest.TestReport) -> None:
        """Take the outcome of one test (its call, or the setup that stopped it)."""
        for name, value in report.user_properties:
            if name == PROFILE_PROPERTY and value not in self.profiles:
                self.profiles.append(cast("dict[str, object]", value))
        props = dict(report.user_properties)
        ids = cast("list[str] | None", props.get(IDS_PROPERTY))
        if not ids:
            return
        if report.when != "call" and report.passed:
            return
        if hasattr(report, "wasxfail"):
            outcome = XFAIL
        elif report.failed:
            outcome = FAILS
        elif report.skipped:
            outcome = NOT_RUN
        else:
            outcome = HOLDS
        measurements: list[dict[str, str]] = [
            cast("dict[str, str]", value) for name, value in report.user_properties if name == MEASURED_PROPERTY
        ]
        for claim_id in ids:
            mine = [m for m in measurements if m["claim"] == claim_id]
            erratum = outcome == HOLDS and any(m["kind"] == ERRATUM for m in mine)
            status = ERRATUM if erratum else outcome
            texts = [m["measured"] for m in mine]
            if outcome in (FAILS, XFAIL):
                texts.append(_failure_line(report))
            elif outcome == NOT_RUN and not texts:
                texts.append(_skip_reason(report))
            reported = next((m["reported"] for m in mine if "reported" in m), None)
            for text in texts or [""]:
                self.outcomes.setdefault(claim_id, []).append((report.nodeid, status, text, reported))

    def rows(self, hide: Iterable[str] = (), notes: Mapping[str, str] | None = None) -> list[ClaimRow]:
        """One row per catalogue claim, in the report's order, less the sections in ``hide`` (the
        "Your export" section is shown only when a run names files to judge). ``notes`` adds a line to
        the row of each claim that ran (why it is unverified on this golden file)."""
        hidden = set(hide)
        rows = []
        for claim in CATALOGUE:
            if claim.section in hidden:
                continue
            row = ClaimRow(claim)
            entries = self.outcomes.get(claim.id, [])
            statuses = {status for _, status, _, _ in entries}
            for status in (FAILS, ERRATUM, HOLDS, XFAIL):
                if status in statuses:
                    row.status = status
                    break
            for nodeid, _, text, reported in entries:
                label = _param_id(nodeid)
                value = f"{label}: {text}" if label and text else text
                if value and value not in row.measured:
                    row.measured.append(value)
                if reported and reported not in row.reported:
                    row.reported.append(reported)
                if nodeid not in row.tests:
                    row.tests.append(nodeid)
            note = (notes or {}).get(claim.id)
            if note and row.status != NOT_RUN:
                row.measured.append(note)
            rows.append(row)
        return rows

    def ran_any(self) -> bool:
        return bool(self.outcomes)


def file_ids(paths: Iterable[Path]) -> list[str]:
    """Test ids for files: the name, or the name with its folder where two files share a name."""
    paths = list(paths)
    names = [p.name for p in paths]
    return [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths]


def _param_id(nodeid: str) -> str:
    match = re.search(r"\[(.+)\]$", nodeid)
    return match.group(1) if match else ""


def _failure_line(report: pytest.TestReport) -> str:
    """The first line of a failure, for the table: no stack trace."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("AssertionError: ").removeprefix("Failed: ")
    return "failed"


def _skip_reason(report: pytest.TestReport) -> str:
    """Why a test did not run (``pytest.skip``'s reason), without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    return str(reason).removeprefix("Skipped: ")


def render_table(rows: Iterable[ClaimRow], statement_width: int = 40) -> list[str]:
    """The claims table as text lines: number, id, status, statement, then each measured value.

    Measured values are never clipped: a second value goes on a line of its own, aligned.
    """
    rows = list(rows)
    id_width = max(len(row.claim.id) for row in rows)
    head = f"{'#':>3} {'claim':<{id_width}}  {'status':<9}  {'statement':<{statement_width}}  "
    lines = [head + "measured"]
    for row in rows:
        values = list(row.measured) or ["-"]
        if row.status == ERRATUM and row.reported:
            values.append(f"report says: {'; '.join(row.reported)}")
        lines.append(
            f"{row.claim.number:>3} {row.claim.id:<{id_width}}  {row.status:<9}  "
            f"{_clip(row.claim.statement, statement_width):<{statement_width}}  {values[0]}"
        )
        lines.extend(" " * len(head) + value for value in values[1:])
    return lines


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_counts(rows: Iterable[ClaimRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts
