"""The AST diff and the DeepStack truth table: layout never counts, behaviour always does."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pytest_qwen3vl.errors import SourceError, UndecidableCondition
from pytest_qwen3vl.source.diff import (
    EXPECTED_TABLE,
    as_source,
    check_one_diff,
    deepstack_truth_table,
    describe_disagreements,
    diff_sources,
    parse_source,
)
from pytest_qwen3vl.source.files import GOLDEN_CONDITION, MODIFIED_CONDITION
from tests.variants import PLACE, VARIANTS, Variant, golden_text

SOURCE_VARIANTS = [v for v in VARIANTS.values() if v.check == "source"]


def changes(before: str, after: str) -> list:
    return diff_sources(parse_source(before, "a.py"), parse_source(after, "b.py"))


# The diff on small files.

BASE = '''"""Module doc."""
import torch


class A:
    def f(self, x):
        if x in self.xs:
            y = self.g(x)
            self.out.append(y)
        return "done"
'''


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(BASE.replace("import torch\n", "import torch  # a comment\n\n\n"), id="comments-blanks"),
        pytest.param(BASE.replace('"done"', "'done'"), id="quotes"),
        pytest.param(BASE.replace("self.g(x)", "self.g(\n                x,\n            )"), id="line-breaks"),
        pytest.param(BASE.replace("if x in self.xs:", "if (x in self.xs):"), id="parentheses"),
        pytest.param(BASE.rstrip("\n"), id="no-final-newline"),
    ],
)
def test_layout_is_not_a_change(after: str) -> None:
    assert changes(BASE, after) == []


def test_changed_test_is_one_condition_change_at_the_if() -> None:
    (change,) = changes(BASE, BASE.replace("if x in self.xs:", "if x in self.xs and x:"))
    assert (change.place, change.kind, change.note) == ("A.f", "condition", "only the test changed")
    assert (change.golden_lines, change.modified_lines) == ((7, 7), (7, 7))
    assert change.modified_source == "        if x in self.xs and x:"


def test_condition_split_over_lines_shows_every_line_of_the_header() -> None:
    after = BASE.replace("if x in self.xs:", "if (\n            x in self.xs and x\n        ):  # note\n        # c")
    (change,) = changes(BASE, after)
    assert change.modified_lines == (7, 9)


def test_changed_statement_in_a_body_is_reported_alone() -> None:
    (change,) = changes(BASE, BASE.replace("self.out.append(y)", "self.out.insert(0, y)"))
    assert (change.place, change.kind, change.golden_line, change.modified_line) == ("A.f", "changed", 9, 9)


def test_added_and_removed_statements_have_no_line_on_the_absent_side() -> None:
    (added,) = changes(BASE, BASE.replace("        return", "        print(x)\n        return"))
    assert (added.kind, added.golden_lines, added.modified_lines) == ("added", None, (10, 10))
    (removed,) = changes(BASE, BASE.replace('        return "done"\n', ""))
    assert (removed.kind, removed.golden_line, removed.modified_line) == ("removed", 10, None)
    assert removed.modified_source == ""


def test_added_method_is_named_in_the_note() -> None:
    (change,) = changes(BASE, BASE + "\n    def h(self):\n        pass\n")
    assert (change.place, change.kind, change.note) == ("A", "added", "adds FunctionDef h")


def test_signature_change_is_a_header_change_of_the_function() -> None:
    (change,) = changes(BASE, BASE.replace("def f(self, x):", "def f(self, x, z=1):"))
    assert (change.place, change.kind, change.note) == ("A.f", "changed", "signature or decorators changed")


def test_docstring_change_counts() -> None:
    (change,) = changes(BASE, BASE.replace("Module doc.", "Other doc."))
    assert (change.place, change.kind, change.note) == ("<module>", "changed", "docstring")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("from ...activations import ACT2FN\n", "from transformers.activations import ACT2FN\n"),
        ("import torch.nn as nn\n", "from torch import nn\n"),
        ("from typing import Any, Optional\n", "from typing import Any\nfrom typing import Optional\n"),
    ],
)
def test_import_rewrite_binding_the_same_objects_is_an_import_change(before: str, after: str) -> None:
    (change,) = changes(before + "x = 1\n", after + "x = 1\n")
    assert change.kind == "import"
    assert "binds the same objects" in change.note


def test_import_of_another_object_is_a_plain_change() -> None:
    (change,) = changes("from ...activations import ACT2FN\n", "from ..activations import ACT2FN\n")
    assert change.kind == "changed"
    assert "transformers.activations.ACT2FN -> transformers.models.activations.ACT2FN" in change.note


def test_match_cases_and_except_handlers_are_aligned() -> None:
    before = "try:\n    f()\nexcept ValueError as e:\n    g(e)\nmatch x:\n    case 1:\n        h()\n"
    after = before.replace("g(e)", "g(None)").replace("case 1:", "case 2:")
    found = [(c.place, c.kind, c.golden_line) for c in changes(before, after)]
    assert found == [("<module>", "changed", 4), ("<module>", "changed", 6)]


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(SourceError, match=r"^broken\.py:3: SyntaxError: "):
        parse_source("x = 1\ny = 2\ndef f(:\n", "broken.py")


def test_unreadable_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        as_source(tmp_path / "missing.py", "<modified>")
    nul = tmp_path / "nul.py"
    nul.write_bytes(b"x = 1\0\n")
    with pytest.raises(SourceError, match=r"nul\.py"):
        as_source(nul, "<modified>")


def test_text_with_a_newline_is_source_and_other_strings_are_paths(tmp_path: Path) -> None:
    assert as_source("x = 1\n", "<golden>").label == "<golden>"
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    assert as_source(str(path), "<golden>").label == str(path)


# The DeepStack truth table.


def test_expected_table_runs_only_in_eager_mode_with_the_flag_unset_at_a_deepstack_layer() -> None:
    assert [combo for combo, run in EXPECTED_TABLE.items() if run] == [(True, False, False)]


def test_golden_condition_runs_at_every_deepstack_layer() -> None:
    assert all(run == combo[0] for combo, run in deepstack_truth_table(GOLDEN_CONDITION).items())


@pytest.mark.parametrize(
    "condition",
    [
        MODIFIED_CONDITION,
        'layer_num in self.deepstack_visual_indexes and not getattr(self, "_skip_deepstack_export", False)'
        " and not torch.jit.is_tracing()",
        'not (layer_num not in self.deepstack_visual_indexes or getattr(self, "_skip_deepstack_export", False)'
        " or torch.jit.is_tracing())",
        "bool(layer_num in self.deepstack_visual_indexes) and not (torch.jit.is_tracing() or False or"
        ' getattr(self, "_skip_deepstack_export", None))',
    ],
    ids=["reference", "de-morgan", "negated-disjunction", "bool-constant-none-default"],
)
def test_equivalent_rewrites_have_the_expected_table(condition: str) -> None:
    assert deepstack_truth_table(condition) == EXPECTED_TABLE


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("layer_num in self.deepstack_visual_indexes and not foo()", "`foo()` is none of the inputs"),
        ("layer_num in self.indexes", "`layer_num in self.indexes` is none"),
        ('getattr(self, "_skip_export", False)', "reads another flag, `'_skip_export'`"),
        ('getattr(self, "_skip_deepstack_export", x)', "the flag's default `x` is not a constant"),
        ("self._skip_deepstack_export", "raises AttributeError while the flag was never set"),
        ("torch.compiler.is_compiling()", "`torch.compiler.is_compiling()` is none"),
    ],
)
def test_undecidable_condition_names_the_sub_expression(condition: str, message: str) -> None:
    with pytest.raises(UndecidableCondition) as info:
        deepstack_truth_table(condition)
    assert message in str(info.value)


def test_disagreement_is_told_in_words() -> None:
    table = deepstack_truth_table(
        'layer_num in self.deepstack_visual_indexes and not getattr(self, "_skip_deepstack_export", False)'
    )
    assert describe_disagreements(table) == [
        "at a layer in deepstack_visual_indexes, while tracing with the flag unset, "
        "the modified file runs DeepStack (expected: skip)"
    ]


# The one-diff claim on the real golden file.


@pytest.mark.parametrize("variant", SOURCE_VARIANTS, ids=lambda v: v.name)
def test_variant_verdict(variant: Variant) -> None:
    golden = golden_text()
    report = check_one_diff(golden, variant.make(golden))
    assert report.conforms is variant.harmless, report.problems
    if variant.harmless:
        assert report.verdict.startswith(f"OK: one change, the DeepStack condition at {PLACE} (golden line 745")
    else:
        assert report.verdict.startswith("FAIL")
        assert variant.expect in "\n".join(report.problems)
        assert variant.place in report.verdict


def test_report_serialises_changes_and_truth_table() -> None:
    golden = golden_text()
    data = json.loads(json.dumps(check_one_diff(golden, VARIANTS["no_tracing_clause"].make(golden)).to_dict()))
    assert data["conforms"] is False
    (change,) = data["changes"]
    assert (change["place"], change["kind"], change["golden"]["line"]) == (PLACE, "condition", 745)
    assert data["condition"]["expected"] == MODIFIED_CONDITION
    wrong = [row for row in data["condition"]["truth_table"] if row["runs_deepstack"] != row["expected"]]
    assert wrong == [
        {"layer_in_indexes": True, "flag_set": False, "tracing": True, "runs_deepstack": True, "expected": False}
    ]


def test_if_replaced_by_another_statement_is_not_a_condition_change() -> None:
    golden = golden_text()
    tree = ast.parse(golden)
    target = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == GOLDEN_CONDITION)
    lines = golden.splitlines(keepends=True)
    unguarded = [line[4:] for line in lines[target.lineno : target.end_lineno]]
    modified = "".join(lines[: target.lineno - 1] + unguarded + lines[target.end_lineno :])
    report = check_one_diff(golden, modified)
    assert "the DeepStack `if` at Qwen3VLVisionModel.forward (golden line 745" in report.problems[0]
    assert "was replaced, not only its test" in report.problems[0]


def test_else_branch_on_the_deepstack_if_is_a_body_change() -> None:
    golden = golden_text()
    reference = VARIANTS["reference"].make(golden)
    anchor = "                deepstack_feature_lists.append(deepstack_feature)\n"
    modified = reference.replace(anchor, anchor + "            else:\n                pass\n")
    report = check_one_diff(golden, modified)
    assert any(p.startswith("the body of the DeepStack `if` changed") for p in report.problems)


def test_golden_without_the_deepstack_if_is_reported() -> None:
    report = check_one_diff("x = 1\n", "x = 2\n")
    assert report.problems == ["<golden> has no `if layer_num in self.deepstack_visual_indexes:` in " + PLACE]


def test_renamed_method_holding_the_deepstack_if_is_a_replacement() -> None:
    golden = golden_text()
    signature = "    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs)"
    modified = VARIANTS["reference"].make(golden).replace(signature, signature.replace("forward", "run"))
    report = check_one_diff(golden, modified)
    assert len(report.problems) == 1
    assert report.problems[0].startswith("the DeepStack `if` at Qwen3VLVisionModel (golden line")


def test_a_null_byte_is_named_by_file_and_line_where_imported_and_where_parsed(tmp_path: Path) -> None:
    """Python gives no line for a null byte; ``path:None:`` helps nobody."""
    from pytest_qwen3vl.source.files import import_modeling_file

    lines = golden_text().splitlines(keepends=True)
    lines[40] = lines[40].rstrip("\n") + "\x00\n"
    path = tmp_path / "modeling_qwen3_vl.py"
    path.write_text("".join(lines), encoding="utf-8")
    expected = f"{path}:41: SyntaxError: source code string cannot contain null bytes"
    with pytest.raises(SourceError) as imported:
        import_modeling_file(path, "modified")
    with pytest.raises(SourceError) as parsed:
        parse_source(path.read_text(encoding="utf-8"), str(path))
    assert str(imported.value) == str(parsed.value) == expected
