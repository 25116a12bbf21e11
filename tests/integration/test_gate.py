"""The DeepStack gate under each exporter: the predicates ``source.diff`` assumes are the ones torch
sets, the report's condition is an erratum under torch.export, a fork that adds ``is_exporting``
holds everywhere, and ``qwen3vl-diff`` passes such forks with a note that says what they change."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pytest_qwen3vl.cli import diff_main
from pytest_qwen3vl.judge.gate import (
    EXPORTERS,
    FLAGS,
    ONNX_EXPORTERS,
    RUN,
    SKIP,
    condition_of,
    gate_table,
    judge_gate,
    words_table,
)
from pytest_qwen3vl.source.diff import check_one_diff, find_deepstack_if
from pytest_qwen3vl.source.files import (
    GOLDEN_CONDITION,
    MODIFIED_CONDITION,
    import_modeling_file,
    installed_golden_path,
)
from pytest_qwen3vl.store.cache import ArtifactCache
from tests.helpers import expected_predicates, measure_predicates
from tests.variants import VARIANTS, golden_text

IS_EXPORTING = MODIFIED_CONDITION[:-1] + " or torch.compiler.is_exporting())"
WORDS_4 = words_table(lambda e, f: e in ("eager", "torch.compile") and f != "True", EXPORTERS, tuple(FLAGS))
WORDS_9 = words_table(lambda e, f: False, ONNX_EXPORTERS, ("True", "unset"))



@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory):
    """``gate(condition)``: the measured table, through one cache for the module."""
    cache = ArtifactCache(tmp_path_factory.mktemp("gates"))
    module = import_modeling_file(installed_golden_path(), "golden")
    return lambda condition: gate_table(condition, module, cache, source=installed_golden_path())


def test_diff_predicates_are_what_torch_sets_under_each_exporter() -> None:
    assert measure_predicates() == expected_predicates()


def test_report_condition_runs_deepstack_under_torch_export_without_the_flag(gate) -> None:
    table = gate(MODIFIED_CONDITION)
    running = sorted(e for (e, f), v in table.cells.items() if v == RUN and f == "unset")
    assert running == ["eager", "export non-strict", "export strict", "onnx dynamo=True", "torch.compile"]
    assert all(v == SKIP for (e, f), v in table.cells.items() if f == "True")
    for words in (WORDS_4, WORDS_9):
        verdict = judge_gate(table, table, words, "it")
        assert not verdict.problems and verdict.measured != verdict.reported  # an erratum, not a failure


def test_fork_with_is_exporting_holds_under_every_exporter(gate) -> None:
    table, reference = gate(IS_EXPORTING), gate(MODIFIED_CONDITION)
    for words in (WORDS_4, WORDS_9):
        verdict = judge_gate(table, reference, words, "it")
        assert not verdict.problems and verdict.measured == verdict.reported, verdict.detail()


def test_fork_without_the_tracing_clause_fails_under_torchscript(gate) -> None:
    wrong = 'layer_num in self.deepstack_visual_indexes and not getattr(self, "_skip_deepstack_export", False)'
    verdict = judge_gate(gate(wrong), gate(MODIFIED_CONDITION), WORDS_9, "it")
    assert verdict.problems == [
        f"under {e} with the flag unset, it runs DeepStack (the report says it skips; the report's condition skips)"
        for e in ("torch.jit.trace", "onnx dynamo=False")
    ]


def test_golden_condition_runs_everywhere_and_a_raising_condition_says_so(gate) -> None:
    assert set(gate(GOLDEN_CONDITION).cells.values()) == {RUN}
    plain = gate("layer_num in self.deepstack_visual_indexes and not self._skip_deepstack_export")
    assert plain.cells[("torch.jit.trace", "unset")].startswith("raises AttributeError")
    assert judge_gate(plain, gate(MODIFIED_CONDITION), WORDS_4, "it").problems


def test_the_gate_is_measured_once_per_condition(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    module = import_modeling_file(installed_golden_path(), "golden")
    first = gate_table(GOLDEN_CONDITION, module, cache, source=installed_golden_path())
    assert gate_table(GOLDEN_CONDITION, module, cache, source=installed_golden_path()) == first
    assert [b["status"] for b in cache.builds()] == ["built"]


def test_a_fork_that_edits_a_helper_of_its_condition_gets_its_own_table(tmp_path: Path) -> None:
    """The same condition text, run with two files' globals: a key without the file would reuse the first."""
    cache = ArtifactCache(tmp_path / "gates")
    condition = "layer_num in self.deepstack_visual_indexes and keep_deepstack()"
    tables = []
    for keep in (True, False):
        fork = tmp_path / f"fork_{keep}.py"
        fork.write_text(f"{golden_text()}\n\ndef keep_deepstack():\n    return {keep}\n", encoding="utf-8")
        tables.append(gate_table(condition, import_modeling_file(fork, f"fork_{keep}"), cache, source=fork))
    assert set(tables[0].cells.values()) == {RUN} and set(tables[1].cells.values()) == {SKIP}
    assert [b["status"] for b in cache.builds()] == ["built", "built"]


def test_condition_of_a_fork_is_found_by_its_body(tmp_path: Path) -> None:
    path = tmp_path / "fork.py"
    path.write_text(VARIANTS["is_exporting"].make(golden_text()), encoding="utf-8")
    found = condition_of(path)
    assert ast.dump(ast.parse(found, mode="eval")) == ast.dump(ast.parse(IS_EXPORTING, mode="eval")), found
    assert find_deepstack_if(ast.parse(golden_text()), any_test=True) is not None
    assert find_deepstack_if(ast.parse(path.read_text(encoding="utf-8"))) is None  # golden's exact test only


@pytest.mark.parametrize(("variant", "notes"), [("reference", 0), ("is_exporting", 1)])
def test_forks_that_also_skip_under_torch_export_pass_with_a_note(variant: str, notes: int) -> None:
    golden = golden_text()
    report = check_one_diff(golden, VARIANTS[variant].make(golden))
    assert report.conforms and len(report.notes) == notes, report.notes
    if notes:
        assert any(n.startswith("additionally skips DeepStack under torch.export") for n in report.notes)
        assert "note: it " in report.verdict


def test_a_fork_that_also_skips_under_torch_compile_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``is_torchdynamo_compiling()`` is True under plain torch.compile too: compiled inference loses DeepStack."""
    path = tmp_path / "fork.py"
    path.write_text(VARIANTS["dynamo_compiling"].make(golden_text()), encoding="utf-8")
    report = check_one_diff(installed_golden_path(), path)
    assert report.problems == report.mode_problems and len(report.problems) == 1, report.problems
    assert report.problems[0].endswith(
        "skips DeepStack under torch.compile with the flag unset, where the report's condition runs it: "
        "compiled inference changes"
    ), report.problems
    assert not report.condition_problems  # equivalent in the 8 combinations of the report
    assert diff_main([str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL (1 change): the DeepStack condition at ")


def test_cli_prints_the_note_and_json_carries_the_modes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "fork.py"
    path.write_text(VARIANTS["is_exporting"].make(golden_text()), encoding="utf-8")
    assert diff_main([str(path)]) == 0
    assert "note: it additionally skips DeepStack under torch.export" in capsys.readouterr().out
    assert diff_main([str(path), "--json"]) == 0
    condition = json.loads(capsys.readouterr().out)["condition"]
    export_unset = next(r for r in condition["modes"] if r["mode"] == "torch.export" and not r["flag_set"])
    assert export_unset == {"mode": "torch.export", "flag_set": False, "runs_deepstack": False, "reference": True}
    assert len(condition["notes"]) == 1


def test_an_incomplete_table_is_not_cached(tmp_path: Path) -> None:
    """A condition that names a global the exporters cannot trace through: the cells an exporter
    could not produce stay unmeasured, and the next request measures again."""
    cache = ArtifactCache(tmp_path)
    namespace = {"torch": __import__("torch"), "probe": lambda: print(end="") is None}  # fullgraph refuses print
    condition = "probe() and layer_num in self.deepstack_visual_indexes"
    first = gate_table(condition, namespace, cache, source=Path(__file__))  # the namespace is this file's
    assert first.errors, first.cells
    gate_table(condition, namespace, cache, source=Path(__file__))
    assert [b["status"] for b in cache.builds()] == ["unpublished", "unpublished"]
