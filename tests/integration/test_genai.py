"""The checkpoint writer, the genai folder and the "In the runtime" claims on wrong files.

A wrong genai folder is the good one with one file swapped: a vision file exported from other
weights, an embedding model that puts the image features in reverse order. The inner runs check
such a folder with ``--qwen3vl-genai-folder`` and must turn the right rows red.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

# Imported before any in-process run, as tests/conftest.py does for onnxruntime: native modules
# must not be imported twice.
og = pytest.importorskip("onnxruntime_genai")

from pytest_qwen3vl.cli import checkpoint_main, genai_main  # noqa: E402
from pytest_qwen3vl.model.build import build_golden  # noqa: E402
from pytest_qwen3vl.model.configs import resolve_config  # noqa: E402
from pytest_qwen3vl.model.grids import Grid  # noqa: E402
from pytest_qwen3vl.model.write_checkpoint import checkpoint_spec, golden_vision_state, write_checkpoint  # noqa: E402
from pytest_qwen3vl.runtimes.genai_builder import BUILDER_MODULE, MISSING_NAMES  # noqa: E402
from pytest_qwen3vl.runtimes.genai_folder import (  # noqa: E402
    VISION_FILE,
    embedding_model,
    make_genai_folder,
    write_embedding,
)
from tests.conftest import RunSuite  # noqa: E402
from tests.helpers import Interrupted, claim_row, lfs_pointer, stop_at  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", 0)


@pytest.fixture(scope="module")
def good_folder(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_genai_folder(checkpoint, tmp_path_factory.mktemp("genai") / "good", grid=Grid.parse("1,24,24"))


def variant(good: Path, target: Path) -> Path:
    """A copy of the good folder whose large files are links: each variant replaces one file."""
    target.mkdir()
    for path in good.iterdir():
        os.symlink(path, target / path.name)
    return target


def test_checkpoint_vision_weights_are_the_sessions_golden(checkpoint: Path) -> None:
    from safetensors import safe_open
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    preset = golden_vision_state(checkpoint_spec("tiny"), 0)
    loaded = build_golden(modeling_qwen3_vl, resolve_config(str(checkpoint), checkpoint), 0).state_dict()
    assert preset.keys() == loaded.keys()
    assert all(torch.equal(preset[k], loaded[k]) for k in preset)
    other_seed = golden_vision_state(checkpoint_spec("tiny"), 1)
    assert not all(torch.equal(preset[k], other_seed[k]) for k in preset), "the seed changes nothing"
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        prefixes = {name.split(".")[0] + "." + name.split(".")[1] for name in handle.keys()}  # noqa: SIM118
    assert prefixes == {"model.visual", "model.language_model", "lm_head.weight"}
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == config["vision_config"]["out_hidden_size"] == 2560
    assert config["text_config"]["vocab_size"] == 1024 > config["image_token_id"]


def test_vision_only_checkpoint_holds_only_the_tower(tmp_path: Path) -> None:
    from safetensors import safe_open

    assert checkpoint_main(["--config", "tiny", "--seed", "0", "--vision-only", str(tmp_path / "v")]) == 0
    with safe_open(str(tmp_path / "v" / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    assert names and all(name.startswith("model.visual.") for name in names)
    assert (tmp_path / "v" / "tokenizer.json").is_file() and (tmp_path / "v" / "preprocessor_config.json").is_file()


@pytest.mark.parametrize("argv", [["--seed", "-1", "OUT"], ["--seed", "4294967296", "OUT"], ["OUT_EXISTS"]],
                         ids=["negative-seed", "seed-above-32-bits", "not-empty"])
def test_checkpoint_cli_bad_input_is_one_line_exit_2(argv: list[str], tmp_path: Path, capsys) -> None:
    (tmp_path / "OUT_EXISTS").mkdir()
    (tmp_path / "OUT_EXISTS" / "file").write_text("x")
    args = [str(tmp_path / a) if a.startswith("OUT") else a for a in argv]
    try:
        code = checkpoint_main(args)
    except SystemExit as exc:  # argparse's own one-line usage error
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qwen3vl-checkpoint: "), err


def test_an_interrupted_genai_folder_leaves_nothing(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):  # after genai's builder has written the decoder
        make_genai_folder(checkpoint, tmp_path / "genai", progress=stop_at("writing embedding.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_genai_cli_refuses_a_checkpoint_of_lfs_pointers_in_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    folder = Path(shutil.copytree(checkpoint, tmp_path / "clone"))
    lfs_pointer(folder / "model.safetensors")
    assert genai_main([str(folder), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"qwen3vl-genai: {folder}/model.safetensors: a git-lfs pointer, not the file: "
                                       f"run `git lfs pull` in {folder}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone"]


def test_genai_cli_needs_a_checkpoint(tmp_path: Path, capsys) -> None:
    assert genai_main([str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qwen3vl-genai: {tmp_path.resolve()}: no config.json (make one with qwen3vl-checkpoint)"


def test_builder_needs_exactly_the_placeholder_names() -> None:
    """The bridge in runtimes/genai_builder.py: without it the builder does not import, with it it does."""
    import transformers

    assert [name for name in MISSING_NAMES if hasattr(transformers, name)] == [], "no longer missing: drop them"
    bare = subprocess.run([sys.executable, "-c", f"import {BUILDER_MODULE}"], capture_output=True, text=True)
    assert bare.returncode != 0 and "Qwen3_5" in bare.stderr.strip().splitlines()[-1]
    bridged = subprocess.run(
        [sys.executable, "-c", "from pytest_qwen3vl.runtimes.genai_builder import add_placeholders as a; a(); "
         f"import {BUILDER_MODULE}"], capture_output=True, text=True,
    )
    assert bridged.returncode == 0, bridged.stderr.strip().splitlines()[-1:]


def test_embedding_puts_features_in_order_and_takes_none() -> None:
    import onnxruntime

    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    session = onnxruntime.InferenceSession(embedding_model(table, 5).SerializeToString())
    ids = np.array([[1, 5, 5, 2], [5, 3, 0, 0]], dtype=np.int64)
    features = np.array([[100, 101], [200, 201], [300, 301]], dtype=np.float32)
    out = session.run(None, {"input_ids": ids, "image_features": features})[0]
    assert out[0, 1].tolist() == [100, 101] and out[0, 2].tolist() == [200, 201] and out[1, 0].tolist() == [300, 301]
    assert out[0, 0].tolist() == table[1].tolist() and out[1, 1].tolist() == table[3].tolist()
    none = session.run(None, {"input_ids": ids[:, :1] * 0 + 2, "image_features": np.zeros((0, 2), np.float32)})[0]
    assert none[:, 0].tolist() == [table[2].tolist()] * 2
    reversed_session = onnxruntime.InferenceSession(embedding_model(table, 5, reverse_images=True).SerializeToString())
    wrong = reversed_session.run(None, {"input_ids": ids, "image_features": features})[0]
    assert wrong[0, 1].tolist() == [300, 301] and wrong[1, 0].tolist() == [100, 101]


def _genai_rows(run_suite: RunSuite, checkpoint: Path, folder: Path) -> dict[str, str]:
    result = run_suite("test_genai.py", f"--qwen3vl-config={checkpoint}", f"--qwen3vl-genai-folder={folder}")
    claims = ("genai-image-features", "genai-deepstack-off", "genai-like-golden", "genai-other-grid")
    return {claim: claim_row(result, claim) for claim in claims}


def test_vision_file_from_other_weights_is_named(run_suite: RunSuite, checkpoint, good_folder, tmp_path) -> None:
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from pytest_qwen3vl.export.builder import export_vision
    from pytest_qwen3vl.model.inputs import make_inputs

    wrong = variant(good_folder, tmp_path / "other-weights")
    (wrong / VISION_FILE).unlink()
    spec, grid = checkpoint_spec("tiny"), Grid.parse("1,24,24")
    export_vision(build_golden(modeling_qwen3_vl, spec, 1), *make_inputs(grid, spec, 0).args, wrong / VISION_FILE)
    rows = _genai_rows(run_suite, checkpoint, wrong)
    assert " fails " in rows["genai-image-features"] and "differ from golden's pooled" in rows["genai-image-features"]
    assert " fails " in rows["genai-deepstack-off"], rows["genai-deepstack-off"]
    # The fixed-grid file on another image size: loud, never a wrong answer.
    assert " holds " in rows["genai-other-grid"] and "the vision file stops at " in rows["genai-other-grid"]


def test_embedding_in_wrong_order_is_caught_by_generation(run_suite: RunSuite, checkpoint, good_folder,
                                                           tmp_path) -> None:
    wrong = variant(good_folder, tmp_path / "reversed")
    (wrong / "embedding.onnx").unlink()
    config = json.loads((checkpoint / "config.json").read_text())
    write_embedding(checkpoint, wrong / "embedding.onnx", config["image_token_id"], reverse_images=True)
    rows = _genai_rows(run_suite, checkpoint, wrong)
    assert " fails " in rows["genai-deepstack-off"], rows["genai-deepstack-off"]
    assert "logits max abs" in rows["genai-deepstack-off"]


def test_without_genai_the_rows_say_how_to_install(run_suite: RunSuite, tmp_path: Path) -> None:
    """onnxruntime-genai hidden from the inner run: every row is 'not run', never a failure."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnxruntime_genai.py").write_text("raise ImportError('hidden for this test')\n")
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'onnxruntime_genai' else _find(n, *a)\n"
    )
    env_path = f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ["PYTHONPATH"], saved = env_path, os.environ.get("PYTHONPATH")
    try:
        result = run_suite("test_genai.py", subprocess=True)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    assert result.ret == 0
    line = claim_row(result, "genai-deepstack-off")
    assert " not run " in line and "pip install pytest-qwen3vl[genai]" in line, line
    shutil.rmtree(blocker)


def test_a_genai_builder_failure_is_not_run_never_fails(run_suite: RunSuite, checkpoint: Path, tmp_path: Path) -> None:
    """A checkpoint genai's builder rejects (an architecture it does not know): our build failed, so
    every row that needs the folder is 'not run' with the builder's reason, none 'fails'."""
    unknown = variant(checkpoint, tmp_path / "unknown-architecture")
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    (unknown / "config.json").unlink()
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3VLUnknownModel"]}))
    result = run_suite("test_genai.py", "-k", "not grid_free", f"--qwen3vl-config={unknown}")
    assert result.ret == 0, result.stdout.str()
    for claim in ("genai-preprocessing", "genai-deepstack-off", "genai-other-grid"):
        line = claim_row(result, claim)
        assert " not run " in line and "onnxruntime-genai's builder failed" in line, line


def test_grid_free_row_fails_for_a_fork_whose_rotary_frequencies_differ(run_suite: RunSuite, tmp_path: Path) -> None:
    """genai-grid-free compares genai's features of the fork's grid-free file with golden's: theta 2e4 is caught."""
    from tests.model_variants import variant_named

    result = run_suite("test_genai.py", "-k", "grid_free", modified=variant_named("theta-20000").write(tmp_path))
    result.assert_outcomes(failed=1)
    line = claim_row(result, "genai-grid-free")
    assert " fails " in line and "from golden's on a 1x20x20 image" in line, line


def _linear(vision: Path, out: Path) -> None:
    """Not a vision encoder at all: one Linear layer over 1536 columns."""
    torch.onnx.export(torch.nn.Linear(1536, 64), (torch.zeros(4, 1536),), str(out), dynamo=False)


def _inputs_named_otherwise(vision: Path, out: Path) -> None:
    """The vision encoder with its pixel input named ``images``: genai's config still feeds pixel_values."""
    import onnx

    model = onnx.load(str(vision))
    for value in model.graph.input:
        value.name = "images" if value.name == "pixel_values" else value.name
    for node in model.graph.node:
        node.input[:] = ["images" if name == "pixel_values" else name for name in node.input]
    onnx.save_model(model, str(out))


def _external_data_missing(vision: Path, out: Path) -> None:
    """The vision encoder saved with its weights beside it, then copied without them."""
    import onnx

    onnx.save_model(onnx.load(str(vision)), str(out), save_as_external_data=True, location="weights.bin")
    (out.parent / "weights.bin").unlink()


@pytest.mark.parametrize(("make", "message"), [
    (_linear, "takes onnx::Gemm_0; genai's config feeds pixel_values, image_grid_thw: not a Qwen3-VL vision"),
    (_inputs_named_otherwise, "takes images, image_grid_thw; genai's config feeds pixel_values, image_grid_thw"),
    (_external_data_missing, "its external data weights.bin is missing"),
], ids=["linear", "inputs-named-otherwise", "external-data-missing"])
def test_genai_cli_refuses_a_vision_file_genai_cannot_use_in_one_line(
    checkpoint: Path, good_folder: Path, tmp_path: Path, capsys, make: Callable[[Path, Path], None], message: str
) -> None:
    (tmp_path / "mine").mkdir()
    vision = tmp_path / "mine" / "vision.onnx"
    make(good_folder / VISION_FILE, vision)
    assert genai_main([str(checkpoint), "-o", str(tmp_path / "out"), "--vision", str(vision)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen3vl-genai: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_genai_cli_copies_a_vision_file_with_every_external_data_file_it_names(
    checkpoint: Path, good_folder: Path, tmp_path: Path
) -> None:
    import onnx

    (tmp_path / "mine").mkdir()
    vision = tmp_path / "mine" / "encoder.onnx"
    onnx.save_model(onnx.load(str(good_folder / VISION_FILE)), str(vision), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    assert genai_main([str(checkpoint), "-o", str(tmp_path / "out"), "--vision", str(vision)]) == 0
    assert {"encoder.onnx", "weights.bin"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_preprocessing_is_compared_with_the_checkpoints_own_processor(
    run_suite: RunSuite, checkpoint: Path, tmp_path: Path
) -> None:
    """A checkpoint whose image processor allows 3136 pixels (the released one 65536): genai follows the
    checkpoint's preprocessor_config.json, and so must the reference, or a 200x200 image is a false erratum."""
    folder = Path(shutil.copytree(checkpoint, tmp_path / "small-budget"))
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["size"]["shortest_edge"] = 3136
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    result = run_suite("test_genai.py", "-k", "processor_matches", f"--qwen3vl-config={folder}")
    row = claim_row(result, "genai-preprocessing")  # erratum, as on the released budget: 300x500 rounds apart
    assert " fails " not in row and "200x200: grid [1, 12, 12], pixel values within" in row, row


def _other_weights(path: Path, grid: Grid) -> Path:
    """The tiny tower exported at ``grid`` from seed 1's weights: a file the checkpoint's golden disagrees with."""
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from pytest_qwen3vl.export.builder import export_vision
    from pytest_qwen3vl.model.inputs import make_inputs

    spec = checkpoint_spec("tiny")
    export_vision(build_golden(modeling_qwen3_vl, spec, 1), *make_inputs(grid, spec, 0).args, path)
    return path


def test_the_genai_runtime_serves_disagrees_and_refuses(checkpoint: Path, good_folder: Path, tmp_path: Path) -> None:
    """onnxruntime-genai judged as any runtime is, on grids fed as named tensors: the folder's own file (golden,
    traced at 1x24x24) serves its grid and is refused on 1x20x20 and on two images, naming the node that
    stops; a file of other weights is wrong; a file another config's folder would take is not run; what is
    kept is keyed by the folder's content."""
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from pytest_qwen3vl.errors import NotRunnable
    from pytest_qwen3vl.judge.finding import REFUSED, WRONG
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.judge.sweep import sweep
    from pytest_qwen3vl.runtimes.genai import OnnxRuntimeGenai
    from tests.helpers import tiny_encoder

    spec, traced = checkpoint_spec("tiny"), Grid.parse("1,24,24")
    golden = GoldenRuns(build_golden(modeling_qwen3_vl, spec, 0), spec, 0)
    runtime = OnnxRuntimeGenai(lambda: good_folder)
    assert runtime.label == "onnxruntime-genai:fp32"
    right = sweep(good_folder / VISION_FILE, runtime, golden, [traced, Grid.parse("1,20,20"),
                                                               Grid.parse("1,24,24+1,24,24")])
    assert right[0].served and right[0].worst_rel_l2() < 1e-5, right[0].reason()
    for refused in right[1:]:
        assert refused.status == REFUSED and refused.error is not None, refused.reason()
        assert refused.error.startswith("onnxruntime-genai: the vision file stops at "), refused.error
    (wrong,) = sweep(_other_weights(tmp_path / "seed1.onnx", traced), runtime, golden, [traced])
    assert wrong.status == WRONG and wrong.error is None, wrong.reason()
    with pytest.raises(NotRunnable, match=r"^not run: other-config.onnx has 4 pixel values per patch, the session's "
                                          r"genai folder 1536: a file of another config than the folder's$"):
        runtime.load(tiny_encoder(tmp_path / "other-config.onnx"))
    # What is kept of a run on genai is keyed by the folder's content: another embedding model, another key.
    reordered = variant(good_folder, tmp_path / "reversed")
    (reordered / "embedding.onnx").unlink()
    image_token = json.loads((checkpoint / "config.json").read_text())["image_token_id"]
    write_embedding(checkpoint, reordered / "embedding.onnx", image_token, reverse_images=True)
    assert runtime.key() == OnnxRuntimeGenai(lambda: good_folder).key() != OnnxRuntimeGenai(lambda: reordered).key()


def test_onnx_rows_are_judged_on_the_genai_runtime(run_suite: RunSuite, good_folder: Path, tmp_path: Path) -> None:
    """``--qwen3vl-runtime=onnxruntime-genai`` runs each --qwen3vl-onnx file in the session's genai folder:
    the golden export holds, the export of other weights fails parity (against the checkpoint) and is
    served (its graph is right with its own weights), and the rows name the runtime."""
    other = _other_weights(tmp_path / "seed1.onnx", Grid.parse("1,24,24"))
    result = run_suite("test_artefact.py", "-k", "parity or grids", f"--qwen3vl-onnx={good_folder / VISION_FILE}",
                       f"--qwen3vl-onnx={other}", "--qwen3vl-grid=1,24,24", "--qwen3vl-runtime=onnxruntime-genai")
    result.assert_outcomes(passed=3, failed=1)
    parity = claim_row(result, "artefact-parity")
    assert "vision.onnx-onnxruntime-genai-1x24x24: onnxruntime-genai:fp32: pooled_embeds: " in parity, parity
    assert "seed1.onnx-onnxruntime-genai-1x24x24: onnxruntime-genai:fp32: outside the fp32 tolerance" in parity, parity
    grids = claim_row(result, "artefact-grids")
    assert "vision.onnx-onnxruntime-genai: onnxruntime-genai:fp32 serves 1 of 1 grid " in grids, grids
    assert "seed1.onnx-onnxruntime-genai: onnxruntime-genai:fp32 serves 1 of 1 grid " in grids, grids
