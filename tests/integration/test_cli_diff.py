"""``qwen3vl-diff``: what a fork's CI or pre-commit hook sees, and its exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qwen3vl.cli import diff_main
from pytest_qwen3vl.source.families import QWEN3_OMNI_MOE, QWEN3_VL_MOE, Family
from pytest_qwen3vl.source.files import installed_golden_path, reference_modified_text
from tests.variants import PLACE, VARIANTS, Variant, golden_text

WRONG = [v for v in VARIANTS.values() if not v.harmless and v.check == "source"]


def write_variant(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(VARIANTS[name].make(golden_text()), encoding="utf-8")
    return path


def test_reference_change_exits_0_with_a_unified_diff(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    modified = write_variant(tmp_path, "split_lines")
    assert diff_main([str(modified)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"== {PLACE} =="
    assert out[1] == "condition: only the test changed"
    assert out[2] == f"--- {installed_golden_path()}:745"
    assert out[3] == f"+++ {modified}:745"
    assert out[4] == "@@ -745 +745,7 @@"
    assert out[5] == "-            if layer_num in self.deepstack_visual_indexes:"
    assert out[-1].startswith(f"OK: one change, the DeepStack condition at {PLACE} (golden line 745")


@pytest.mark.parametrize("variant", WRONG, ids=lambda v: v.name)
def test_wrong_variant_exits_1_naming_the_place(
    variant: Variant, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    modified = write_variant(tmp_path, variant.name)
    assert diff_main(["--golden", str(installed_golden_path()), str(modified)]) == 1
    out = capsys.readouterr().out
    assert variant.expect in out
    assert out.splitlines()[-1].startswith("FAIL")
    assert f"{variant.place} (" in out.splitlines()[-1]
    if variant.name != "unchanged":
        assert f"== {variant.place} ==" in out
        assert "golden line" in out or "modified line" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    modified = write_variant(tmp_path, "absolute_import")
    assert diff_main(["--json", str(modified)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["conforms"] is False
    assert data["warnings"] == []
    assert [(c["place"], c["kind"]) for c in data["changes"]] == [("<module>", "import"), (PLACE, "condition")]
    assert data["changes"][0]["golden"] == {
        "line": 29,
        "end_line": 29,
        "source": "from ...activations import ACT2FN",
    }
    assert data["verdict"].startswith("FAIL (2 changes): unexpected change (import) at <module>")


def test_missing_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert diff_main([str(tmp_path / "absent.py")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{tmp_path / 'absent.py'}: cannot read: No such file or directory\n"


def test_syntax_error_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(golden_text().replace("def rotate_half(x):", "def rotate_half(x:"), encoding="utf-8")
    assert diff_main(["--json", str(broken)]) == 2
    captured = capsys.readouterr()
    line = golden_text().splitlines().index("def rotate_half(x):") + 1
    assert captured.err.startswith(f"{broken}:{line}: SyntaxError: ")
    assert captured.err.count("\n") == 1
    assert "error" in json.loads(captured.out)


def test_other_golden_is_compared_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    golden = tmp_path / "golden.py"
    golden.write_text(golden_text().rstrip("\n"), encoding="utf-8")
    assert diff_main(["--golden", str(golden), str(write_variant(tmp_path, "reference"))]) == 0
    assert capsys.readouterr().err.startswith(f"warning: golden file {golden} is no known transformers'")


def test_runs_without_torch_or_transformers(tmp_path: Path) -> None:
    modified = write_variant(tmp_path, "reference")
    code = (
        "import sys\nfrom pytest_qwen3vl.cli import diff_main\n"
        f"code = diff_main([{str(modified)!r}])\n"
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\nsys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("qwen3vl-diff") is None, reason="package not installed (pip install -e .)")
def test_console_script(tmp_path: Path) -> None:
    wrong = write_variant(tmp_path, "no_tracing_clause")
    result = subprocess.run(["qwen3vl-diff", str(wrong)], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert "while tracing with the flag unset, the modified file runs DeepStack (expected: skip)" in result.stdout
    result = subprocess.run(["qwen3vl-diff"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage: qwen3vl-diff" in result.stderr


@pytest.mark.parametrize("family", [QWEN3_VL_MOE, QWEN3_OMNI_MOE], ids=lambda f: f.name)
def test_a_family_fork_is_compared_with_its_own_golden(family: Family, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The fork's classes pick the installed golden of its family and that file's DeepStack ``if``;
    the same fork against Qwen3-VL's golden is refused in one line, not diffed."""
    golden = installed_golden_path(family)
    fork = tmp_path / golden.name
    fork.write_text(reference_modified_text(golden.read_text(encoding="utf-8")), encoding="utf-8")
    assert diff_main([str(fork)]) == 0
    assert f"OK: one change, the DeepStack condition at {family.vision_class}.forward" in capsys.readouterr().out
    assert diff_main(["--golden", str(installed_golden_path()), str(fork)]) == 2
    err = capsys.readouterr().err
    assert f"is a {family.name} file (it defines {family.vision_class})" in err and err.count("\n") == 1, err
