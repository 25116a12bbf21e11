"""The claims reporter: the plugin object that gathers every claim outcome on the controller, prints
the table and the cache's summary line, and writes the Markdown report."""

from __future__ import annotations

import pytest

from pytest_qwen3vl.errors import SourceError
from pytest_qwen3vl.plugin.catalogue import ARTEFACT_SECTION, CATALOGUE
from pytest_qwen3vl.plugin.claims import ClaimBoard, render_table, summary_counts
from pytest_qwen3vl.plugin.exports import FAULTS_OUTPUT, TALLY_KEY, WORKER_OUTPUT
from pytest_qwen3vl.plugin.settings import Settings
from pytest_qwen3vl.source.files import check_golden

REPORTER_NAME = "qwen3vl-claims"


class ClaimReporter:
    """Collects claim outcomes from every report (xdist ships workers' reports here), prints the
    table and writes the Markdown report."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.board = ClaimBoard()
        self.config = config
        self.settings = settings

    def unverified(self) -> dict[str, str]:
        """``{claim id: why it is unverified}`` for the claims whose definitions differ from every
        verified version's (none on a verified golden file)."""
        if self.settings.golden is None:
            return {}
        try:
            golden = check_golden(self.settings.golden)
        except SourceError:
            return {}  # the golden-version row says why the file was refused
        if golden.verified:
            return {}
        found = {claim.id: golden.coverage.unverified(claim.reads) for claim in CATALOGUE if claim.reads}
        return {claim_id: note for claim_id, note in found.items() if note}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.board.add_report(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        """xdist: add a finished worker's cache events to the controller's tally."""
        output = getattr(node, "workeroutput", {})
        self.config.stash[TALLY_KEY].merge(output.get(WORKER_OUTPUT, {}), output.get(FAULTS_OUTPUT, {}))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.board.ran_any():
            return
        rows = self.board.rows(hide=() if self.settings.onnx else (ARTEFACT_SECTION,), notes=self.unverified())
        selected = [row for row in rows if row.tests]
        terminalreporter.section("qwen3vl claims")
        for line in render_table(selected):
            terminalreporter.write_line(line)
        counts = ", ".join(f"{n} {status}" for status, n in summary_counts(selected).items())
        terminalreporter.write_line(f"qwen3vl claims: {counts}")
        if len(selected) < len(rows):  # a run narrowed with -m or -k: the rest were not asked for
            terminalreporter.write_line(f"qwen3vl claims not selected in this run: {len(rows) - len(selected)}")
        if self.settings.cache_fallback is not None:
            terminalreporter.write_line(f"qwen3vl cache: {self.settings.cache_fallback}; this session used a "
                                        f"private cache at {self.settings.cache_dir}")
        tally = terminalreporter.config.stash[TALLY_KEY]
        if tally.faults:
            terminalreporter.write_line(f"qwen3vl cache: {self.settings.cache_dir} refused a write "
                                        f"({', '.join(sorted(tally.faults))}); what this session made instead is "
                                        f"in a private cache at {self.settings.spare_cache}, removed at exit")
        cache_line = tally.line()
        if cache_line:
            terminalreporter.write_line(f"{cache_line} (log: {self.settings.export_cache / 'builds.log'})")
        if self.settings.report is not None and not hasattr(terminalreporter.config, "workerinput"):
            from pytest_qwen3vl.plugin.markdown import write_report

            path = write_report(self.settings.report, rows, self.settings, self.board.profiles)
            terminalreporter.write_line(f"qwen3vl report written to {path}")
