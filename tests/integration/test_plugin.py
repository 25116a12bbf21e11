"""The plugin as a user meets it: options, ini keys, bad input, header, fixtures, the claims table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_qwen3vl.source.files import installed_golden_path
from pytest_qwen3vl.source.goldens import verified_versions
from pytest_qwen3vl.versions import transformers_version
from tests.helpers import modified_copy

SHOW_SETTINGS = """
import json

def test_show(qwen3vl_settings):
    s = qwen3vl_settings
    print("SETTINGS=" + json.dumps({
        "grids": [g.id for g in s.grids], "golden": str(s.golden), "modified": str(s.modified),
        "config": s.model.name, "seed": s.seed, "cache_dir": str(s.cache_dir),
    }))
"""


def shown_settings(result: pytest.RunResult) -> dict:
    line = next(line for line in result.outlines if "SETTINGS=" in line)
    return json.loads(line.partition("SETTINGS=")[2])


def test_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SHOW_SETTINGS)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    shown = shown_settings(result)
    assert shown["grids"] == ["1x24x24"]
    assert shown["config"] == "tiny" and shown["seed"] == 0 and shown["modified"] == "None"
    assert shown["golden"] == str(installed_golden_path())
    assert shown["cache_dir"] == str(pytester.path / ".pytest_cache" / "d" / "qwen3vl")


def test_every_option_on_the_command_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    modified = modified_copy(tmp_path, "import torch\n", "import torch  # fork\n")
    test_file = pytester.makepyfile(SHOW_SETTINGS)
    result = pytester.runpytest(
        test_file, "-s", "--qwen3vl-grid=1,20,20", "--qwen3vl-grid", "1,24,24+2,8,8", f"--qwen3vl-modified={modified}",
        f"--qwen3vl-golden={installed_golden_path()}", "--qwen3vl-config=2b", "--qwen3vl-seed=5",
        "--qwen3vl-cache-dir=cachehere",
    )
    result.assert_outcomes(passed=1)
    assert shown_settings(result) == {
        "grids": ["1x20x20", "1x24x24+2x8x8"], "golden": str(installed_golden_path()), "modified": str(modified),
        "config": "2b", "seed": 5, "cache_dir": str(pytester.path / "cachehere"),
    }


def test_every_ini_key_and_the_command_line_wins(pytester: pytest.Pytester, tmp_path: Path) -> None:
    fork = pytester.mkdir("fork")
    modified_copy(fork, "import torch\n", "import torch  # fork\n")
    pytester.makeini(
        f"""
        [pytest]
        qwen3vl_grid = 1,20,20 1,24,24+1,8,8
        qwen3vl_modified = fork/modeling_qwen3_vl.py
        qwen3vl_golden = {installed_golden_path()}
        qwen3vl_config = 8b
        qwen3vl_seed = 3
        qwen3vl_cache_dir = inicache
        """
    )
    test_file = pytester.makepyfile(SHOW_SETTINGS)
    from_ini = shown_settings(pytester.runpytest(test_file, "-s"))
    assert from_ini == {
        "grids": ["1x20x20", "1x24x24+1x8x8"], "golden": str(installed_golden_path()),
        "modified": str(fork / "modeling_qwen3_vl.py"), "config": "8b", "seed": 3,
        "cache_dir": str(pytester.path / "inicache"),
    }
    overridden = shown_settings(pytester.runpytest(test_file, "-s", "--qwen3vl-grid=1,4,4", "--qwen3vl-seed=9",
                                                    "--qwen3vl-config=tiny"))
    assert (overridden["grids"], overridden["seed"], overridden["config"]) == (["1x4x4"], 9, "tiny")


def test_each_grid_parametrizes_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_g(qwen3vl_grid):\n    assert qwen3vl_grid.num_patches > 0\n")
    result = pytester.runpytest("-v", "--qwen3vl-grid=1,24,24", "--qwen3vl-grid=1,24,24+1,20,20")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_g?1x24x24? PASSED*", "*test_g?1x24x24+1x20x20? PASSED*"])


def test_header_names_files_config_and_grids(pytester: pytest.Pytester, tmp_path: Path) -> None:
    modified = modified_copy(tmp_path, "import torch\n", "import torch  # fork\n")
    test_file = pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(test_file, "--qwen3vl-grid=1,20,20", "--qwen3vl-config=4b")
    result.stdout.fnmatch_lines([
        f"qwen3vl golden: transformers {transformers_version()} (verified sha256 *) {installed_golden_path()}",
        "qwen3vl modified: reference change*",
        "qwen3vl config: 4b; grids: 1x20x20; seed: 0",
    ])
    result = pytester.runpytest(test_file, f"--qwen3vl-modified={modified}")
    result.stdout.fnmatch_lines([f"qwen3vl modified: {modified}"])


def test_no_header_when_the_plugin_is_not_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest()
    assert not [line for line in result.outlines if line.startswith("qwen3vl")]


def _golden_with_other_bytes(tmp: Path) -> Path:
    path = tmp / "golden.py"
    path.write_text(installed_golden_path().read_text(encoding="utf-8") + "\n# local edit\n", encoding="utf-8")
    return path


BAD_INPUTS = {
    "grid-two-numbers": (["--qwen3vl-grid=1,24"], "'1,24' is not three positive integers T,H,W"),
    "grid-words": (["--qwen3vl-grid=one,two,three"], "is not three positive integers"),
    "grid-zero": (["--qwen3vl-grid=1,0,24"], "must be positive"),
    "grid-empty": (["--qwen3vl-grid="], "empty grid"),
    "grid-odd": (["--qwen3vl-grid=1,23,24"], "divisible by the merge size 2"),
    "modified-missing": (["--qwen3vl-modified=nowhere/modeling_qwen3_vl.py"], "--qwen3vl-modified: no such file"),
    "golden-missing": (["--qwen3vl-golden=nowhere.py"], "--qwen3vl-golden: no such file"),
    "config-unknown": (["--qwen3vl-config=16b"], "--qwen3vl-config='16b': neither a preset (tiny, 2b, 4b, 8b) nor"),
    "seed-bad": (["--qwen3vl-seed=abc"], "not an integer"),
    "lock-timeout-zero": (["--qwen3vl-lock-timeout=0"], "--qwen3vl-lock-timeout='0': expected a positive number"),
    "report-folder": (["--qwen3vl-report=."], "is a folder; name the Markdown file to write"),
    "snapshot-dir-file": (["--qwen3vl-snapshot-dir=/dev/null"], "/dev/null is a file, not a folder"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_one_line_usage_error(pytester: pytest.Pytester, case: str) -> None:
    args, message = BAD_INPUTS[case]
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: ") and message in errors[0], result.errlines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_golden_of_another_version_names_the_installed_one(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--qwen3vl-golden={_golden_with_other_bytes(tmp_path)}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: golden file *is no known transformers' modeling_qwen3_vl.py*installed transformers "
        f"{transformers_version()}; known: *; verified: {', '.join(verified_versions('qwen3_vl'))})*"
    ])
    assert "Traceback" not in result.stderr.str()


def test_invalid_config_json_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".json", config="{broken")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--qwen3vl-config=config.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --qwen3vl-config='config.json': *config.json is not valid JSON*"])


def test_unknown_claim_id_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.qwen3vl_claim('no-such-claim')\ndef test_x():\n    pass\n"
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *qwen3vl_claim('no-such-claim') is not in the claim catalogue"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.qwen3vl_claim(id):*", "@pytest.mark.qwen3vl_export:*",
                                 "@pytest.mark.qwen3vl_slow:*"])


def test_unused_plugin_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_modules():
            assert "pytest_qwen3vl.plugin.hooks" in sys.modules
            heavy = [m for m in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "matplotlib")
                     if m in sys.modules]
            assert heavy == []
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


FREEZE_PROBE = """
import gc
from pathlib import Path

def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):  # after the plugin's sessionfinish, as close to the exit as a hook gets
        Path("frozen.txt").write_text(str(gc.get_freeze_count()))
"""


@pytest.mark.parametrize(("test", "frozen"), [
    ("def test_models(qwen3vl_golden_module):\n    pass\n", True),
    ("def test_nothing():\n    pass\n", False),
], ids=["models-imported", "plugin-unused"])
def test_an_xdist_worker_that_imported_the_models_freezes_what_survives(
    pytester: pytest.Pytester, test: str, frozen: bool
) -> None:
    """So that its exit does not walk every object of torch and transformers again while the controller
    waits; a worker that did not import them is left as it is."""
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makepyfile(test)
    result = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert (int((pytester.path / "frozen.txt").read_text()) > 0) is frozen


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_suite_joins_a_run_that_names_a_modified_file(pytester: pytest.Pytester, tmp_path: Path) -> None:
    modified = modified_copy(tmp_path, "import torch\n", "import torch  # fork\n")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    named = collected(pytester.runpytest("--collect-only", "-q", f"--qwen3vl-modified={modified}"))
    assert "test_own.py::test_own" in named
    assert any("test_runtime.py::test_outputs_bit_identical" in line for line in named)


@pytest.mark.parametrize(
    ("args", "own", "suite"),
    [
        ([], True, False),  # no modified file named: nothing extra
        (["test_own.py", "MOD"], True, False),  # explicit paths: only those
        (["MOD", "--qwen3vl-suite=off"], True, False),
        (["MOD", "--qwen3vl-suite=only"], False, True),
        (["--qwen3vl-suite=only"], False, True),
    ],
    ids=["unnamed", "explicit-paths", "off", "only", "only-without-modified"],
)
def test_suite_modes(pytester: pytest.Pytester, tmp_path: Path, args: list[str], own: bool, suite: bool) -> None:
    modified = modified_copy(tmp_path, "import torch\n", "import torch  # fork\n")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    argv = [f"--qwen3vl-modified={modified}" if a == "MOD" else a for a in args]
    names = collected(pytester.runpytest("--collect-only", "-q", *argv))
    assert ("test_own.py::test_own" in names) is own
    assert any("test_runtime.py::" in line for line in names) is suite


def test_bad_suite_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--qwen3vl-suite=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --qwen3vl-suite='sometimes': expected one of auto, only, off"])


def test_a_fork_of_another_family_than_the_named_golden_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from pytest_qwen3vl.source.families import QWEN3_VL_MOE
    from pytest_qwen3vl.source.files import reference_modified_text

    fork = tmp_path / "modeling_qwen3_vl_moe.py"
    fork.write_text(reference_modified_text(installed_golden_path(QWEN3_VL_MOE).read_text(encoding="utf-8")))
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--qwen3vl-modified={fork}", f"--qwen3vl-golden={installed_golden_path()}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *_moe.py is a qwen3_vl_moe file and golden * a qwen3_vl one*"])
    assert "Traceback" not in result.stderr.str()
