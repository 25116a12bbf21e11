"""The export recipes on the tiny config: the grid-free replacement in PyTorch and in ONNX on every sweep
grid, the DeepStack recipe per output in both layouts, and a wrong replacement that both checks catch."""

from __future__ import annotations

import contextlib
import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from types import MethodType
from typing import Any

import onnx
import pytest
import torch

from pytest_qwen3vl.errors import ExportFailed, RecipeUnsupported
from pytest_qwen3vl.export import gridfree
from pytest_qwen3vl.export.builder import export_vision
from pytest_qwen3vl.export.equivalence import pytorch_sweep
from pytest_qwen3vl.export.recipes import export_recipe
from pytest_qwen3vl.judge.finding import served_line
from pytest_qwen3vl.model.build import VisionPair, build_pair
from pytest_qwen3vl.model.configs import resolve_config
from pytest_qwen3vl.model.grids import DEFAULT_GRID, SWEEP
from pytest_qwen3vl.model.inputs import trace_inputs
from pytest_qwen3vl.onnxfile.signature import graph_digest, graph_signature
from pytest_qwen3vl.plugin.exports import SessionExports
from pytest_qwen3vl.source.files import import_modeling_file, installed_golden_path
from tests.conftest import RunSuite
from tests.helpers import claim_row, line_of, not_served, session_exports, sweep_file
from tests.model_variants import POS_EMBED_H_W_SWAPPED, variant_named

pytestmark = pytest.mark.qwen3vl_export

SQUARE = {"1x16x16", "1x24x24", "1x48x48", "2x16x16", "1x16x16+1x16x16"}
NOT_SQUARE = {grid.id for grid in SWEEP} - SQUARE


@pytest.fixture(scope="module")
def exports(pair: VisionPair, shared_cache: Path) -> SessionExports:
    """The session's export cache: each recipe file is exported once for every test that asks."""
    return session_exports(pair, shared_cache)


def swapped_pos_embed(self: Any, grid_thw: torch.Tensor) -> torch.Tensor:
    """WRONG on purpose: interpolates the position table with H and W swapped (right on square grids)."""
    return gridfree.fast_pos_embed_interpolate(self, grid_thw[:, [0, 2, 1]])


def swapped_forward(self: Any, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
    """WRONG on purpose, for a model that takes precomputed positions: the interpolation tensors of the
    grid with H and W swapped, the rotary positions right."""
    right = gridfree.position_tensors(self, grid_thw)
    swapped = gridfree.position_tensors(self, grid_thw[:, [0, 2, 1]])
    wrong = {**right, "interp_indices": swapped["interp_indices"], "interp_weights": swapped["interp_weights"]}
    return type(self).forward(self, hidden_states, grid_thw, **wrong, **kwargs)


@contextlib.contextmanager
def wrong_grid_free(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``grid_free`` with the swapped interpolation bound over the right one, where ``grid_free`` put it."""
    with gridfree.grid_free(model):
        name, wrong = (
            ("fast_pos_embed_interpolate", swapped_pos_embed) if "fast_pos_embed_interpolate" in model.__dict__
            else ("forward", swapped_forward)
        )
        setattr(model, name, MethodType(wrong, model))
        yield model


@pytest.mark.qwen3vl_versions
@pytest.mark.parametrize("which", ["golden", "modified"])
def test_replacement_forward_equals_golden_on_every_sweep_grid(pair: VisionPair, which: str) -> None:
    result = pytorch_sweep(getattr(pair, which), pair.golden, SWEEP, 0)
    assert not result.wrong, result.line()
    assert result.line() == "serves 9 of 9 grids"


@pytest.mark.qwen3vl_versions
def test_grid_free_leaves_the_model_as_it_found_it(pair: VisionPair) -> None:
    model = pair.modified
    before = set(model.__dict__)
    with gridfree.grid_free(model):
        bound = set(model.__dict__) - before
        assert bound in ({"fast_pos_embed_interpolate", "rot_pos_emb"}, {"forward"}), bound
        assert "forward" in model.blocks[0].attn.__dict__
    assert set(model.__dict__) == before
    assert all("forward" not in block.attn.__dict__ for block in model.blocks)


@pytest.mark.qwen3vl_versions
def test_grid_free_refuses_a_model_whose_positions_it_does_not_know() -> None:
    """Qwen2-VL's vision tower (a real transformers model) has neither layout: one line naming what it has."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    config = Qwen2VLVisionConfig(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
    model = modeling_qwen2_vl.Qwen2VisionTransformerPretrainedModel._from_config(config)
    expected = (r"^grid-free export failed: Qwen2VisionTransformerPretrainedModel has .* of fast_pos_embed_interpolate "
                r"and rot_pos_emb, and its modeling file no .*get_vision_interpolation_indices_and_weights")
    with pytest.raises(RecipeUnsupported, match=expected) as raised, gridfree.grid_free(model):
        pass
    assert "\n" not in str(raised.value) and not model.__dict__.keys() & {"forward", "rot_pos_emb"}


@pytest.mark.qwen3vl_versions
def test_grid_free_refuses_an_interpolation_it_does_not_reproduce(pair: VisionPair) -> None:
    model = pair.golden
    if hasattr(model, "fast_pos_embed_interpolate"):
        pytest.skip("the model interpolates in fast_pos_embed_interpolate, which the recipe replaces whole")
    model.interpolation_mode = "bicubic"
    try:
        refused = pytest.raises(RecipeUnsupported, match=r"mode, align_corners = \('bicubic', True\)")
        with refused, gridfree.grid_free(model):
            pass
    finally:
        model.interpolation_mode = "bilinear"


def test_grid_free_raises_on_a_grid_the_merger_cannot_pool(pair: VisionPair) -> None:
    """An odd W would interpolate to valid table rows and answer wrongly; the guard makes it an error."""
    with torch.no_grad(), gridfree.grid_free(pair.golden), pytest.raises(IndexError):
        pair.golden.fast_pos_embed_interpolate(torch.tensor([[1, 64, 9]]))


@pytest.mark.qwen3vl_versions
def test_grid_free_file_reproduces_golden_on_every_sweep_grid(exports: SessionExports, pair: VisionPair) -> None:
    path = exports.recipe("modified", "grid-free", DEFAULT_GRID)
    session = exports.session(path)
    inputs = {value.name: value.shape for value in session.get_inputs()}
    assert inputs == {"pixel_values": ["num_patches", 1536], "image_grid_thw": ["num_images", 3]}
    assert [value.name for value in session.get_outputs()] == ["pooled_embeds"]
    findings = sweep_file(path, pair.golden, SWEEP)
    served, line = served_line(findings)
    assert served and len(findings) == len(SWEEP), line
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert metadata["qwen3vl.recipe"] == "grid-free" and metadata["qwen3vl.serves"] == "every grid"


def test_report_recipe_file_serves_only_the_grid_it_was_traced_at(exports: SessionExports, pair: VisionPair) -> None:
    path = exports.recipe("modified", "report", DEFAULT_GRID)
    findings = sweep_file(path, pair.golden, SWEEP)
    served, line = served_line(findings)
    assert not served and [f.grid.id for f in findings if f.served] == [DEFAULT_GRID.id], line
    # every other grid stops in ONNX Runtime: the trace baked 1x24x24's shapes into the graph
    assert {f.status for f in findings if not f.served} == {"refused"}, line
    assert line.startswith(f"serves 1 of {len(SWEEP)} grids; refuses 1x16x16 (ONNX Runtime: "), line
    assert "1x16x40 (ONNX Runtime: Reshape node " in line, line
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert metadata["qwen3vl.serves"] == "only the grid it was traced at (1x24x24)"


def test_a_sweep_is_measured_once_then_read_from_the_cache(pair: VisionPair, shared_cache: Path) -> None:
    """What the other xdist worker, or the next run, does: read the result, open no ONNX Runtime session."""
    first, later = session_exports(pair, shared_cache), session_exports(pair, shared_cache)
    measured = first.sweep(first.recipe("modified", "grid-free", DEFAULT_GRID))
    read = later.sweep(later.recipe("modified", "grid-free", DEFAULT_GRID))
    assert read == measured and len(read) == len(SWEEP) and not not_served(read), line_of(read)
    assert first.measured.events["built"] + first.measured.events["reused"] == 1
    assert later.measured.events == {"reused": 1}


def test_a_signature_and_digest_are_measured_once_then_read_from_the_cache(
    pair: VisionPair, shared_cache: Path
) -> None:
    """Read back as measured, keys in the same order (snapshots compare the documents made from them)."""
    first, later = session_exports(pair, shared_cache), session_exports(pair, shared_cache)
    path = first.recipe("modified", "grid-free", DEFAULT_GRID)
    signature, digest = first.signature(path), first.digest(path)
    assert json.dumps(signature) == json.dumps(graph_signature(path)) and digest == graph_digest(path)
    assert (later.signature(path), later.digest(path)) == (signature, digest)
    assert later.measured.events == {"reused": 2}


def test_a_sweep_with_a_wrong_grid_is_measured_again(pair: VisionPair, shared_cache: Path) -> None:
    """The report recipe's file serves its own grid only: that verdict is never replayed from the cache."""
    exports = session_exports(pair, shared_cache)
    path = exports.recipe("modified", "report", DEFAULT_GRID)
    once, again = exports.sweep(path), exports.sweep(path)
    assert once == again and len(not_served(once)) == len(SWEEP) - 1, line_of(once)
    assert exports.measured.events == {"unpublished": 2}


@pytest.mark.parametrize(
    ("layout", "names"),
    [
        ("split", ["pooled_embeds", "deepstack_features_0", "deepstack_features_1", "deepstack_features_2"]),
        ("stacked", ["pooled_embeds", "deepstack_features"]),
    ],
)
def test_deepstack_recipe_matches_golden_per_output(
    exports: SessionExports, pair: VisionPair, layout: str, names: list[str]
) -> None:
    path = exports.recipe("golden", "deepstack", DEFAULT_GRID, layout=layout)
    session = exports.session(path)
    assert [output.name for output in session.get_outputs()] == names
    if layout == "stacked":
        assert session.get_outputs()[1].shape == [3, "num_merged_patches", 2560]
    findings = sweep_file(path, pair.golden, SWEEP)
    served, line = served_line(findings)
    assert served and len(findings) == len(SWEEP), line
    assert all(len(f.outputs) == 4 for f in findings), line  # pooled and each DeepStack output compared


def test_deepstack_check_catches_two_outputs_swapped(exports: SessionExports, pair: VisionPair, tmp_path: Path) -> None:
    """The per-output check compares by name: a file with two DeepStack outputs swapped is wrong on every
    grid, outside the tolerance on exactly the two swapped outputs."""
    model = onnx.load(str(exports.recipe("golden", "deepstack", DEFAULT_GRID)))
    first, second = model.graph.output[1], model.graph.output[2]
    renames = {first.name: second.name, second.name: first.name}
    for node in model.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
    first.name, second.name = second.name, first.name
    path = tmp_path / "swapped.onnx"
    onnx.save_model(model, str(path))
    findings = sweep_file(path, pair.golden, SWEEP[:2])
    served, line = served_line(findings)
    assert not served and [f.status for f in findings] == ["wrong", "wrong"], line
    for finding in findings:
        outside = {o.output for o in finding.outputs if not o.within(finding.tolerance)}
        assert outside == {"deepstack_features_0", "deepstack_features_1"}, line
    assert "; wrong on " in line and "deepstack_features_" in line and "relative L2" in line, line


def test_deepstack_recipe_refuses_the_modified_file(pair: VisionPair, tmp_path: Path) -> None:
    with pytest.raises(ExportFailed, match=r"emits 0 of 3 DeepStack tensors under torch.jit.trace"):
        export_recipe(pair.modified, "deepstack", tmp_path / "modified.onnx")
    assert not (tmp_path / "modified.onnx").exists()
    assert "_skip_deepstack_export" not in pair.modified.__dict__


@pytest.mark.qwen3vl_versions
def test_wrong_replacement_is_caught_in_pytorch_naming_the_grids(pair: VisionPair) -> None:
    result = pytorch_sweep(pair.modified, pair.golden, SWEEP, 0, replaced=wrong_grid_free)
    assert {check.grid.id for check in result.wrong} == NOT_SQUARE, result.line()
    for grid in NOT_SQUARE:
        assert grid in result.line()


@pytest.mark.qwen3vl_versions
def test_wrong_replacement_is_caught_in_onnx_naming_the_grids(pair: VisionPair, tmp_path: Path) -> None:
    """Traced at a square grid, so the export itself looks fine; the sweep finds the wide and tall ones."""
    path = tmp_path / "wrong.onnx"
    with wrong_grid_free(pair.modified):
        export_vision(pair.modified, *trace_inputs(pair.modified, DEFAULT_GRID, 0), path)
    findings = sweep_file(path, pair.golden, SWEEP)
    line = line_of(findings)
    assert {f.grid.id for f in not_served(findings)} == NOT_SQUARE, line
    assert {f.status for f in not_served(findings)} == {"wrong"}, line  # it runs: only the numbers show it
    assert "wrong on " in line and "1x16x40 (pooled_embeds relative L2" in line, line


def test_grid_free_claim_fails_for_a_file_whose_rotary_frequencies_differ(run_suite: RunSuite, tmp_path: Path) -> None:
    """The claim compares your file's grid-free export with golden: theta 2e4 changes every rotary angle."""
    modified = variant_named("theta-20000").write(tmp_path)
    result = run_suite("test_recipes.py", "-k", "one_grid_free_file", modified=modified)
    result.assert_outcomes(failed=1)
    row = claim_row(result, "grid-free-export")
    assert " fails " in row and "serves 0 of 9 grids; wrong on 1x16x16 (pooled_embeds relative L2" in row, row


OWN_MATHS_REFUSED = (
    "the file's own forward differs from the grid-free replacement on 1x16x40 (relative L2 *): "
    "the recipe would export other maths than this file's"
)


def test_grid_free_recipe_refuses_a_fork_whose_own_position_code_it_would_replace(tmp_path: Path) -> None:
    """The fork swaps H and W in ``fast_pos_embed_interpolate``, which the replacement stands in for: right on
    the square trace grid, so only the wide check grid shows the export would hold golden's maths, not the fork's."""
    golden = installed_golden_path()
    fork = POS_EMBED_H_W_SWAPPED.write(tmp_path)
    spec = resolve_config("tiny", golden.parent)
    model = build_pair(import_modeling_file(golden, "golden"), import_modeling_file(fork, "modified"), spec, 0).modified
    with pytest.raises(RecipeUnsupported) as raised:
        export_recipe(model, "grid-free", tmp_path / "fork.onnx", grid=DEFAULT_GRID)
    assert fnmatch.fnmatch(raised.value.summary, OWN_MATHS_REFUSED), raised.value.summary
    gap = float(raised.value.summary.split("relative L2 ")[1].split(")")[0])
    assert gap > 0.1, raised.value.summary
    assert not (tmp_path / "fork.onnx").exists()


def test_grid_free_claims_are_not_run_for_a_fork_whose_own_position_code_differs(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    modified = POS_EMBED_H_W_SWAPPED.write(tmp_path)
    result = run_suite("test_recipes.py", "-k", "one_grid_free_file", modified=modified)
    result.assert_outcomes(skipped=1)
    row = claim_row(result, "grid-free-export")
    assert "not run: the file's own forward differs from the grid-free replacement on 1x16x40" in row, row


def test_grid_free_claims_are_judged_per_runtime_and_name_what_blocks_openvino(run_suite: RunSuite) -> None:
    """Our default grid-free file (TorchScript) serves every grid on ONNX Runtime and does not load on
    OpenVINO, in one line naming the op and the exporter that avoids it; the dynamo file serves both."""
    pytest.importorskip("openvino", reason="pip install pytest-qwen3vl[openvino]")
    result = run_suite("test_recipes.py", "-k", "one_grid_free_file or dynamo_and_serves",
                       "--qwen3vl-runtime=onnxruntime", "--qwen3vl-runtime=openvino:f32")
    torchscript = claim_row(result, "grid-free-export")
    assert "onnxruntime-1x24x24: one file traced at 1x24x24 on onnxruntime:fp32 serves 9 of 9 grids" in torchscript
    assert ("openvino:f32-1x24x24: the grid-free file of the modified model traced at 1x24x24 on openvino:f32 "
            "serves 0 of 9 grids; refuses every grid (openvino: does not load: Conversion is failed for: "
            "SequenceAt-17") in torchscript, torchscript
    dynamo = claim_row(result, "grid-free-dynamo")
    assert "openvino:f32-1x24x24: exports (no data-dependent guard left); one file on openvino:f32 serves 9 of 9" \
        in dynamo, dynamo
    result.assert_outcomes(passed=3, failed=1)


def float_sample_point(index: torch.Tensor, size: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """WRONG on purpose at reduced precision: transformers' float32 sample point with its integer part
    by an int cast (the recipe before integer arithmetic). Right at fp32; in fp16 the point loses its
    fraction, and the float-int-float cast pair is what ONNX Runtime's optimiser merges away."""
    source = index.to(torch.float32) * (side - 1) / torch.clamp(size - 1, min=1).to(torch.float32)
    floor = source.int()
    return floor.long(), source - floor


def test_grid_free_positions_survive_the_optimisers_fp16_rewrite(
    exports: SessionExports, pair: VisionPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's file serves every sweep grid on the optimiser's fp16 rewrite (its sample points are
    integer arithmetic); the same recipe with float sample points serves only 1x48x48, whose
    interpolation is the identity, though both serve every grid at fp32."""
    from pytest_qwen3vl.runtimes.ort_optimized import OrtOptimized

    fp16 = OrtOptimized(tmp_path / "runtimes", "fp16")
    served, line = served_line(sweep_file(exports.recipe("modified", "grid-free", DEFAULT_GRID), pair.golden,
                                          SWEEP, runtime=fp16))
    assert served and line.startswith("serves 9 of 9 grids (worst relative L2 "), line
    monkeypatch.setattr(gridfree, "sample_point", float_sample_point)
    wrong = export_recipe(pair.modified, "grid-free", tmp_path / "float-points.onnx").path
    assert served_line(sweep_file(wrong, pair.golden, SWEEP))[0], "the float sample points are right at fp32"
    findings = sweep_file(wrong, pair.golden, SWEEP, runtime=fp16)
    assert [f.grid.id for f in findings if f.served] == ["1x48x48"], served_line(findings)[1]
