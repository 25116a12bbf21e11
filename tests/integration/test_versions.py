"""Self-tests of what differs between the verified transformers versions, run on each of them.

CI runs this module (and the other ``qwen3vl_versions`` tests and the conformance suite) a second
time with transformers 5.23.0. What a test expects is taken from the structure the installed
golden's forward returns (``pytest_qwen3vl.model.outputs``), never from a hard-coded version.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_qwen3vl.export.builder import export_mode, export_vision
from pytest_qwen3vl.model.build import VisionPair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import Grid
from pytest_qwen3vl.model.inputs import make_inputs
from pytest_qwen3vl.model.outputs import MODEL_OUTPUT, merged, pre_merger, structure
from pytest_qwen3vl.onnxfile.signature import graph_signature
from pytest_qwen3vl.runtimes.onnxruntime import ort_session, run_pooled
from pytest_qwen3vl.source import fingerprints
from pytest_qwen3vl.source.coverage import AREAS, coverage
from pytest_qwen3vl.source.families import QWEN3_VL
from pytest_qwen3vl.source.files import check_golden, installed_golden_path, reference_modified_text, transformers_dir
from pytest_qwen3vl.source.fingerprints import DefinitionIndex, candidates, known_files, version_mismatch, vote
from pytest_qwen3vl.source.goldens import REPORT_VERSION
from tests.conftest import RunSuite
from tests.helpers import claim_row

pytestmark = pytest.mark.qwen3vl_versions

GRID = "1,8,8"
# The golden file of another verified version (CI points it at its first environment's 4.57.6 file).
OTHER_GOLDEN = "QWEN3VL_OTHER_GOLDEN"


def _installed() -> str:
    return check_golden(installed_golden_path()).version


@pytest.fixture
def unmeasured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The installed version taken out of the stored fingerprints, as a release newer than the package."""
    data = json.loads(fingerprints.DATA.read_text(encoding="utf-8"))
    version = _installed()
    for by_version in data.values():
        by_version.pop(version, None)
    stored = tmp_path / "fingerprints.json"
    stored.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(fingerprints, "DATA", stored)
    fingerprints.known_files.cache_clear()
    yield version
    fingerprints.known_files.cache_clear()


def test_installed_golden_is_known_and_fingerprinted() -> None:
    golden = check_golden(installed_golden_path())
    if not golden.known:
        pytest.skip(f"transformers {golden.version} is newer than the stored fingerprints: tools/make_fingerprints.py")
    stored = known_files()[golden.family.name][golden.version].definitions
    tree = ast.parse(golden.path.read_text(encoding="utf-8"))
    index = DefinitionIndex(tree, golden.family, transformers_dir())
    for roots in AREAS.values():
        index.closure(roots(golden.family))
    assert index.hashes == stored, f"fingerprints.json is stale for {golden.version}: run tools/make_fingerprints.py"
    reference = ast.parse(reference_modified_text(golden.path.read_text(encoding="utf-8")))
    result = vote(reference, candidates(golden.family, tree, golden.version))
    assert result.made_from == golden.version and result.neither == 1, result  # the one changed forward


def test_a_changed_vision_forward_unverifies_the_claims_that_read_it(tmp_path: Path) -> None:
    """A golden whose vision forward changed: the vision and output claims say unverified, naming
    ``Qwen3VLVisionModel.forward``; the text rotary claim keeps the verdict of the installed version."""
    path = installed_golden_path()
    text = path.read_text(encoding="utf-8")
    changed = tmp_path / "modeling_qwen3_vl.py"
    changed.write_text(reference_modified_text(text), encoding="utf-8")
    found = coverage(changed, QWEN3_VL, "9.9.9", transformers_dir())
    installed = coverage(path, QWEN3_VL, _installed(), transformers_dir())
    for area in ("vision", "output"):
        note = found.unverified(area)
        assert note is not None and "Qwen3VLVisionModel.forward" in note, note
    assert found.areas["text-mrope"] == installed.areas["text-mrope"]
    assert "Qwen3VLVisionModel" in found.line(), found.line()


def test_fork_of_another_version_is_named_under_an_unmeasured_version(
    other_fork: tuple[str, Path], unmeasured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installed version unknown to the package: the fork's origin is still found, from the stored
    definitions of every known version and the installed file's own."""
    from pytest_qwen3vl.cli import diff_main

    version, fork = other_fork
    assert diff_main([str(fork)]) == 1
    out = capsys.readouterr().out
    line = f"FAIL: {fork} was made from transformers {version}, checked against installed {unmeasured}: "
    assert out.startswith(line), out
    assert out.count("\n") == 1, out


def test_installed_file_of_an_unmeasured_version_runs_unverified(unmeasured: str, tmp_path: Path) -> None:
    """With the installed version taken out of the stored fingerprints, its file is accepted and says
    which verified version its definitions match; a copy of it elsewhere is refused."""
    from pytest_qwen3vl.errors import SourceError

    path = installed_golden_path()
    found = check_golden(path)
    assert not found.verified and not found.known and found.version == unmeasured
    assert found.label.startswith(f"transformers {unmeasured} (installed, not a verified version; "), found.label
    assert "vision definitions " in found.label, found.label
    copy = tmp_path / "modeling_qwen3_vl.py"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(SourceError, match="is no known transformers' modeling_qwen3_vl"):
        check_golden(copy)


def test_report_wrapper_exports_what_outputs_0_is(pair: VisionPair, tmp_path: Path) -> None:
    """The report's ``outputs[0]`` wrapper against the builder's: on 5.x it exports the pre-merger
    states (hidden_size wide) under the name pooled_embeds; on 4.57.6 the two are the merged embeddings."""
    spec = resolve_config("tiny", installed_golden_path().parent)
    inputs = make_inputs(Grid.parse(GRID), spec, 0)
    model = pair.modified
    with torch.no_grad(), export_mode(model, skip_deepstack=True):
        outputs = model(*inputs.args)
    files = {w: export_vision(model, *inputs.args, tmp_path / f"{w}.onnx", wrapper=w).path for w in ("first", "pooled")}
    dims = {w: graph_signature(path)["contract"]["outputs"][0]["dims"] for w, path in files.items()}
    got = {w: run_pooled(ort_session(path), *inputs.args) for w, path in files.items()}
    out_hidden, hidden = spec.vision["out_hidden_size"], spec.vision["hidden_size"]
    assert dims["pooled"][1] == out_hidden and np.allclose(got["pooled"], merged(outputs).numpy(), atol=1e-5)
    if structure(outputs) == MODEL_OUTPUT:
        states = pre_merger(outputs)
        assert states is not None
        # The exporter leaves the width symbolic; ONNX Runtime's result shows it.
        assert got["first"].shape[1] == hidden != out_hidden, (dims, got["first"].shape)
        assert np.allclose(got["first"], states.numpy(), atol=1e-5), "outputs[0] exported something else"
    else:
        assert dims["first"] == dims["pooled"] and np.array_equal(got["first"], got["pooled"])


def test_output_contract_row_names_what_outputs_0_is(run_suite: RunSuite) -> None:
    result = run_suite("test_contracts.py", "-k", "forward_returns", f"--qwen3vl-grid={GRID}")
    result.assert_outcomes(passed=2)
    row = claim_row(result, "output-contract")
    if _installed() == REPORT_VERSION:
        assert " holds " in row and "outputs[0], which the report's wrapper exports, is the merged embeddings" in row
    else:
        assert " erratum " in row, row
        assert "is the last_hidden_state, the states before the merger (64, 64)" in row, row
        assert "report says: outputs[0] is the merged embeddings (16, 2560)" in row, row


@pytest.fixture
def other_fork(tmp_path: Path) -> tuple[str, Path]:
    """The reference change made on another verified version's golden file."""
    other = os.environ.get(OTHER_GOLDEN)
    if not other:
        pytest.skip(f"set {OTHER_GOLDEN} to another verified version's modeling_qwen3_vl.py (CI does)")
    golden = check_golden(Path(other))
    assert golden.version != _installed(), f"{OTHER_GOLDEN} is the installed version's file"
    fork = tmp_path / "modeling_qwen3_vl.py"
    fork.write_text(reference_modified_text(golden.path.read_text(encoding="utf-8")), encoding="utf-8")
    return golden.version, fork


def test_fork_of_another_version_gets_one_line_from_qwen3vl_diff(other_fork: tuple[str, Path]) -> None:
    version, fork = other_fork
    done = subprocess.run(
        [sys.executable, "-m", "pytest_qwen3vl.cli", str(fork)], capture_output=True, text=True, check=False
    )
    line = f"FAIL: {fork} was made from transformers {version}, checked against installed {_installed()}: "
    assert done.returncode == 1 and done.stdout.startswith(line) and done.stdout.count("\n") == 1, done.stdout


def test_fork_of_another_version_gets_one_line_in_the_suite(run_suite: RunSuite, other_fork: tuple[str, Path]) -> None:
    version, fork = other_fork
    result = run_suite("test_source.py", "test_runtime.py", f"--qwen3vl-grid={GRID}", modified=fork)
    message = f"made from transformers {version}, checked against installed {_installed()}: "
    for claim in ("one-diff", "deepstack-condition", "deepstack-body", "runtime-equivalence"):
        row = claim_row(result, claim)
        assert " fails " in row and message in row, row
    assert "changed at" not in result.stdout.str(), "the versions' differences were listed as changes"


def test_deepstack_off_reference_is_golden_without_deepstack_layers(tmp_path: Path) -> None:
    """genai-deepstack-off's reference: ``deepstack_off`` must give golden's logits with no DeepStack layer
    (on either output structure; 5.x also needs ``mm_token_type_ids``), and differ from DeepStack on."""
    from pytest_qwen3vl.model.generation import deepstack_off, load_full_model, teacher_forced_logits
    from pytest_qwen3vl.model.write_checkpoint import write_checkpoint

    model = load_full_model(write_checkpoint(tmp_path / "tiny", "tiny", 0))
    config = model.config
    grid = Grid.parse(GRID)
    pixels = make_inputs(grid, resolve_config("tiny", installed_golden_path().parent), 0).args[0]
    prompt = [config.vision_start_token_id, *[config.image_token_id] * (grid.num_patches // 4),
              config.vision_end_token_id, 11, 12]
    args = (prompt, [13, 14, 15], pixels, torch.tensor([grid.images[0]]))
    with_deepstack = teacher_forced_logits(model, *args)
    with deepstack_off(model):
        off = teacher_forced_logits(model, *args)
    visual = model.model.visual
    visual.deepstack_visual_indexes = []
    try:
        no_layers = teacher_forced_logits(model, *args)
    finally:
        del visual.deepstack_visual_indexes
    assert np.array_equal(off, no_layers)
    assert np.abs(with_deepstack - off).max() > 1e-4, "DeepStack on and off give the same logits"


def test_no_version_verdict_on_a_fork_of_the_installed_file(unmeasured: str) -> None:
    """A fork of the installed file is never called 'made from' another version, known or not."""
    golden = ast.parse(installed_golden_path().read_text(encoding="utf-8"))
    fork = ast.parse(reference_modified_text(installed_golden_path().read_text(encoding="utf-8")))
    assert version_mismatch(fork, golden, unmeasured, QWEN3_VL) is None
