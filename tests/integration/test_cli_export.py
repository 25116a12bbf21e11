"""``qwen3vl-export``: a file written end to end, and one line with exit code 2 for each bad input."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

from pytest_qwen3vl.cli import export_main
from pytest_qwen3vl.source.files import installed_golden_path, write_reference_modified
from tests.model_variants import POS_EMBED_H_W_SWAPPED

pytestmark = pytest.mark.qwen3vl_export


@pytest.mark.skipif(shutil.which("qwen3vl-export") is None, reason="package not installed (pip install -e .)")
def test_console_script_writes_a_grid_free_file_with_progress(tmp_path: Path) -> None:
    out = tmp_path / "vision.onnx"
    result = subprocess.run(
        ["qwen3vl-export", "--config", "tiny", "--recipe", "grid-free", "--grid", "1,16,40", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("qwen3vl-export: building the tiny vision model (golden: ")
    assert "exporting recipe grid-free with torchscript, opset 17, traced at 1x16x40" in lines[2]
    assert f"wrote {out}" in lines[3] and "outputs pooled_embeds" in lines[3]
    assert lines[-1].startswith("qwen3vl-export: the file serves every grid; done in ")
    model = onnx.load(str(out))
    assert {entry.key: entry.value for entry in model.metadata_props}["qwen3vl.trace_grid"] == "1,16,40"
    assert [value.name for value in model.graph.input] == ["pixel_values", "image_grid_thw"]


PROGRESS = tuple(f"qwen3vl-export: {word} " for word in ("building", "built", "exporting"))


def run(*argv: str) -> int:
    """The command's exit code, in this process (argparse's own errors exit by SystemExit)."""
    try:
        return export_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _fork_that_does_not_import(tmp_path: Path) -> Path:
    path = tmp_path / "broken.py"
    text = installed_golden_path().read_text(encoding="utf-8")
    path.write_text(text.replace("def rotate_half(x):", "def rotate_half(x):\n    undefined_name\n", 1) +
                    "\nrotate_half(None)\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-config", "qwen3vl-export: --config='nope': neither a preset (tiny, 2b, 4b, 8b) nor an existing *"),
        ("missing-fork", "qwen3vl-export: --modified: {tmp}/missing.py does not exist"),
        ("fork-does-not-import", "qwen3vl-export: {tmp}/broken.py:*: NameError: name 'undefined_name' is not defined"),
        ("bad-grid", "qwen3vl-export: 1,16,15: H and W must be divisible by the merge size 2, got 1,16,15"),
        ("layout-without-deepstack", "qwen3vl-export: error: --layout applies to --recipe deepstack only, not report"),
        ("deepstack-from-modified",
         "qwen3vl-export: torchscript export failed: the model emits 0 of 3 DeepStack tensors under torch.jit.trace*"),
        ("grid-free-of-other-maths",
         "qwen3vl-export: grid-free export failed: the file's own forward differs from the grid-free replacement on "
         "1x16x40 (relative L2 *): the recipe would export other maths than this file's"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    out = ["-o", str(tmp_path / "out.onnx")]
    argv = {
        "bad-config": ["--config", "nope", "--recipe", "grid-free"],
        "missing-fork": ["--config", "tiny", "--modified", str(tmp_path / "missing.py"), "--recipe", "report"],
        "fork-does-not-import": ["--config", "tiny", "--modified", str(_fork_that_does_not_import(tmp_path)),
                                 "--recipe", "report"],
        "bad-grid": ["--config", "tiny", "--recipe", "report", "--grid", "1,16,15"],
        "layout-without-deepstack": ["--config", "tiny", "--recipe", "report", "--layout", "stacked"],
        "deepstack-from-modified": ["--config", "tiny", "--recipe", "deepstack", "--modified",
                                    str(write_reference_modified(installed_golden_path(), tmp_path))],
        "grid-free-of-other-maths": ["--config", "tiny", "--recipe", "grid-free", "--modified",
                                     str(POS_EMBED_H_W_SWAPPED.write(tmp_path))],
    }[case]
    assert run(*argv, *out) == 2
    lines = capsys.readouterr().err.splitlines()
    problems = [line for line in lines if not line.startswith(PROGRESS)]
    assert len(problems) == 1, lines
    assert fnmatch.fnmatch(problems[0], expected.format(tmp=tmp_path)), problems[0]
    assert not (tmp_path / "out.onnx").exists()


def test_a_family_fork_exports_from_its_own_checkpoint_and_a_checkpoint_of_another_family_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a Qwen3-Omni fork, the model is built from Omni's classes and the Omni checkpoint's weights (it
    was built from Qwen3-VL's: "vision tensors do not fit the config"); without the fork, golden is
    Qwen3-VL's and the Omni checkpoint is refused in one line."""
    from pytest_qwen3vl.source.families import QWEN3_OMNI_MOE
    from tests.helpers import omni_checkpoint

    folder = omni_checkpoint(tmp_path / "omni", seed=3)
    fork = write_reference_modified(installed_golden_path(QWEN3_OMNI_MOE), tmp_path)
    out = tmp_path / "omni.onnx"
    assert run("--config", str(folder), "--modified", str(fork), "--recipe", "grid-free", "-o", str(out)) == 0
    assert "weights: the checkpoint's model.safetensors" in capsys.readouterr().err
    assert any(i.name.endswith("merger.mlp.0.weight") for i in onnx.load(str(out)).graph.initializer)  # Omni's names
    assert run("--config", str(folder), "--recipe", "grid-free", "-o", str(tmp_path / "vl.onnx")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"qwen3vl-export: --config='{folder}': a qwen3_omni_moe checkpoint, and the file checked is a "
                   "qwen3_vl one (modeling_qwen3_vl.py): name a qwen3_vl checkpoint, or a qwen3_omni_moe file with "
                   "--modified"], err
