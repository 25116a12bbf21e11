"""End to end as a downstream repo meets the plugin: build the wheel, install it in a fresh virtual
environment, and run ``pytest --qwen3vl-grid=1,24,24 -n 2`` in a repo that names its modified file.

Slow by nature (a venv, a torch install, whole-suite runs): one module-scoped environment serves
every test here. It needs the package registry, so it is marked ``network``: ``-m "not network"``
deselects it where the registry cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qwen3vl.source.files import installed_golden_path, reference_modified_text
from pytest_qwen3vl.versions import transformers_version
from tests.conftest import REPO
from tests.helpers import MERGER_LINE, claim_row, claim_status, claim_statuses

pytestmark = pytest.mark.network

OWN_TEST = "def test_own():\n    assert 1 + 1 == 2\n"


def run(*args: str | Path, cwd: Path | None = None, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the built wheel and this environment's transformers installed."""
    root = tmp_path_factory.mktemp("downstream-env")
    checked(run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", root / "dist", REPO))
    wheel = next((root / "dist").glob("pytest_qwen3vl-*.whl"))
    checked(run(sys.executable, "-m", "venv", root / "venv"))
    pip = root / "venv" / "bin" / "pip"
    checked(run(pip, "install", "-q", "torch==2.13.0"))
    # A downstream repo pins the transformers its fork was made from: the one installed here.
    checked(run(pip, "install", "-q", wheel, f"transformers=={transformers_version()}"))
    return root / "venv"


def make_repo(root: Path, modified_text: str | None) -> Path:
    """A downstream repo: its own test, and (if given) its fork named in pyproject.toml."""
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_own.py").write_text(OWN_TEST)
    ini = "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n"
    if modified_text is not None:
        (root / "pytorch_backup").mkdir()
        (root / "pytorch_backup" / "modeling_qwen3_vl.py").write_text(modified_text)
        ini += 'qwen3vl_modified = "pytorch_backup/modeling_qwen3_vl.py"\n'
    (root / "pyproject.toml").write_text(ini)
    return root


def reference_text() -> str:
    return reference_modified_text(installed_golden_path().read_text(encoding="utf-8"))


def test_installed_suite_passes_beside_the_repos_own_tests(venv: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", reference_text())
    result = run(venv / "bin" / "pytest", "--qwen3vl-grid=1,24,24", "-n", "2", "-p", "no:cacheprovider",
                 "-rA", cwd=repo)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "PASSED tests/test_own.py::test_own" in result.stdout
    assert "qwen3vl claims:" in result.stdout
    assert "fails" not in claim_statuses(result.stdout).values(), "a claim fails"
    assert "PASSED test_runtime.py::test_outputs_bit_identical" in result.stdout


def test_wrong_fork_fails_and_the_table_names_the_claim(venv: Path, tmp_path: Path) -> None:
    wrong = reference_text().replace(MERGER_LINE, MERGER_LINE.replace("self.linear_fc1(x)", "self.linear_fc1(x) * 2"))
    repo = make_repo(tmp_path / "repo", wrong)
    result = run(venv / "bin" / "pytest", "--qwen3vl-grid=1,24,24", "-n", "2", "-p", "no:cacheprovider", cwd=repo)
    assert result.returncode == 1, result.stdout[-4000:]
    assert claim_status(result.stdout, "runtime-equivalence") == "fails", result.stdout[-4000:]


def test_repo_naming_no_modified_file_collects_nothing_extra(venv: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", None)
    result = checked(run(venv / "bin" / "pytest", "-p", "no:cacheprovider", "-q", cwd=repo))
    assert "1 passed" in result.stdout and "qwen3vl" not in result.stdout


# A downstream builder's own export script: the released layout's vision tower, the report's wrapper.
BUILDER = '''
import sys

import torch
from transformers import Qwen3VLForConditionalGeneration

checkpoint, out = sys.argv[1], sys.argv[2]
model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager")
vision = model.model.visual.eval()
vision._skip_deepstack_export = True


class Pooled(torch.nn.Module):
    def __init__(self, vision):
        super().__init__()
        self.vision = vision

    def forward(self, pixel_values, image_grid_thw):
        out = self.vision(pixel_values, image_grid_thw)
        return out.pooler_output if hasattr(out, "pooler_output") else out[0]


grid = torch.tensor([[1, 24, 24]])
pixels = torch.randn(576, 1536)
torch.onnx.export(Pooled(vision), (pixels, grid), out, dynamo=False, opset_version=17,
                  input_names=["pixel_values", "image_grid_thw"], output_names=["pooled_embeds"],
                  dynamic_axes={"pixel_values": {0: "n"}, "image_grid_thw": {0: "m"}, "pooled_embeds": {0: "k"}})
'''


def test_a_repo_checks_the_file_its_own_builder_exports(venv: Path, tmp_path: Path) -> None:
    """qwen3vl-checkpoint writes the tiny model; the repo's script exports it; the suite judges that file."""
    repo = make_repo(tmp_path / "repo", None)
    checked(run(venv / "bin" / "qwen3vl-checkpoint", "--config", "tiny", "--seed", "0", "ckpt", cwd=repo))
    (repo / "export_vision.py").write_text(BUILDER)
    checked(run(venv / "bin" / "python", "export_vision.py", "ckpt", "vision.onnx", cwd=repo))
    result = run(venv / "bin" / "pytest", "--qwen3vl-suite=only", "-m", "qwen3vl_artefact", "-p", "no:cacheprovider",
                 "--qwen3vl-config=ckpt", "--qwen3vl-onnx=vision.onnx", "--qwen3vl-grid=1,24,24",
                 "--qwen3vl-grid=1,16,16", cwd=repo)
    table = result.stdout
    assert claim_status(table, "artefact-interface") == "holds", table[-4000:]
    parity = claim_row(table, "artefact-parity")
    assert claim_status(table, "artefact-parity") == "fails" and "1x16x16" in parity, parity
    assert "serves 1 of 2 grids" in claim_row(table, "artefact-grids"), table[-4000:]
    # The builder's wrapper keeps the tower as ``vision``: the drift is still located by module.
    assert "drift starts at pos_add" in claim_row(table, "artefact-where"), table[-4000:]
