"""Claim text-mrope: position ids (3, B, S) and interleaved MRoPE, on golden and modified (the report: shared).

``get_rope_index`` runs on the real model that holds it in the whole model of the file under test
(``Qwen3VLModel``, ``Qwen3VLMoeModel``, Qwen3-Omni's thinker: ``model.pipeline.parts``), built on the meta
device: the method reads only the config, so no text weights need to exist. The prompts mix text and image
tokens, two in a batch, the shorter one left-padded. Positions and cos/sin are re-derived
independently (``pytest_qwen3vl.model.references``) and compared.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from pytest_qwen3vl.model.api import rope_index, text_rope
from pytest_qwen3vl.model.pipeline import parts
from pytest_qwen3vl.model.references import chunked_axes, mrope_axes, mrope_cos_sin, text_positions

# Per prompt: (text tokens before, between and after the images, image grids).
PROMPTS = (
    ((3, 4), ((1, 8, 12),)),
    ((2, 1, 3), ((1, 4, 4), (1, 6, 8))),
)
PAD = 0

which_model = pytest.mark.parametrize("which", ["golden", "modified"])


def _config(spec, family) -> Any:
    """The family's config (``Qwen3VLConfig``, ``Qwen3VLMoeConfig``, ``Qwen3OmniMoeThinkerConfig``) from the
    spec's text and vision dicts (text: released head_dim and mrope_section) and the released special tokens
    (the thinker's config has no default for the vision ones)."""
    import importlib

    from pytest_qwen3vl.model.api import text_fields
    from pytest_qwen3vl.model.configs import RELEASED_TOKENS

    if spec.text is None:
        pytest.skip(f"config {spec.name} has no text config")
    config_class = getattr(importlib.import_module(family.config_module), family.config)
    return config_class(text_config=text_fields(copy.deepcopy(spec.text)), vision_config=copy.deepcopy(spec.vision),
                        **RELEASED_TOKENS)


def _prompt(config: Any, text_runs: tuple[int, ...], grids: tuple[tuple[int, int, int], ...]) -> list[int]:
    """Text, then per image: vision start, one image token per merged patch, vision end, text."""
    merge = config.vision_config.spatial_merge_size
    tokens = [100 + i for i in range(text_runs[0])]
    for (t, h, w), after in zip(grids, text_runs[1:], strict=True):
        tokens += [config.vision_start_token_id, *[config.image_token_id] * (t * (h // merge) * (w // merge))]
        tokens += [config.vision_end_token_id, *[200 + i for i in range(after)]]
    return tokens


def _batch(config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Left-padded input ids, attention mask, image_grid_thw, and each prompt's derived positions."""
    prompts = [_prompt(config, runs, grids) for runs, grids in PROMPTS]
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    grids = torch.tensor([grid for _, prompt_grids in PROMPTS for grid in prompt_grids])
    merge = config.vision_config.spatial_merge_size
    derived = [
        text_positions(p, prompt_grids, config.image_token_id, merge)
        for p, (_, prompt_grids) in zip(prompts, PROMPTS, strict=True)
    ]
    return ids, mask, grids, derived


def _max_err(actual: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest absolute difference over cos and sin."""
    return max((a.double() - e).abs().max().item() for a, e in zip(actual, expected, strict=True))


@which_model
@pytest.mark.qwen3vl_claim("text-mrope")
def test_rope_index_gives_3_b_s_positions(
    request, which, qwen3vl_config, qwen3vl_golden, qwen3vl_golden_module, qwen3vl_record
):
    """Positions are re-derived independently. The rope delta of a left-padded prompt is counted from
    the padded length on 4.57.6 and from the prompt's own length on 5.x (measured): either is accepted
    for golden, and modified must give golden's."""
    module = request.getfixturevalue(f"qwen3vl_{which}_module")
    family = qwen3vl_golden.family
    config = _config(qwen3vl_config, family)
    ids, mask, grids, derived = _batch(config)
    deltas_of = {}
    for name, source in (("golden", qwen3vl_golden_module), (which, module)):
        with torch.device("meta"):
            model = parts(getattr(source, family.whole)(config)).holder
        position_ids, deltas_of[name] = rope_index(model, ids, grids, mask, config.image_token_id)
    deltas = deltas_of[which]
    assert tuple(position_ids.shape) == (3, *ids.shape), (
        f"{which}: position ids have shape {tuple(position_ids.shape)}, expected (3, B, S) = (3, {ids.shape[0]}, "
        f"{ids.shape[1]})"
    )
    for b, want in enumerate(derived):
        got = position_ids[:, b, mask[b] == 1]
        assert torch.equal(got, want), (
            f"{which}: prompt {b}'s (T, H, W) positions differ from the re-derivation at token "
            f"{(got != want).any(0).nonzero()[0].item()}: {got.T.tolist()[:40]} vs {want.T.tolist()[:40]}"
        )
        after = want.max().item() + 1
        conventions = {after - ids.shape[1]: "padded length", after - int(mask[b].sum()): "prompt length"}
        assert deltas[b].item() in conventions, (
            f"{which}: prompt {b}'s rope delta {deltas[b].item()} is neither {' nor '.join(map(str, conventions))}"
        )
    assert torch.equal(deltas.flatten(), deltas_of["golden"].flatten()), (
        f"{which}: rope deltas {deltas.flatten().tolist()}, golden's {deltas_of['golden'].flatten().tolist()}"
    )
    qwen3vl_record.holds(
        f"position ids {tuple(position_ids.shape)} for 2 prompts ({ids.shape[1]} tokens, one left-padded, "
        f"{len(grids)} images) equal the re-derivation; rope deltas {deltas.flatten().tolist()} "
        f"(counted from the {conventions[deltas[-1].item()]})"
    )


@which_model
@pytest.mark.qwen3vl_claim("text-mrope")
def test_text_rotary_is_interleaved_mrope(request, which, qwen3vl_config, qwen3vl_golden, qwen3vl_record):
    module = request.getfixturevalue(f"qwen3vl_{which}_module")
    config = _config(qwen3vl_config, qwen3vl_golden.family)
    text = config.text_config
    theta, sections = text_rope(text)
    rotary = getattr(module, qwen3vl_golden.family.text_rotary)(text)
    ids, mask, _, derived = _batch(config)
    position_ids = torch.zeros((3, *ids.shape), dtype=torch.long)
    for b, want in enumerate(derived):
        position_ids[:, b, mask[b] == 1] = want
    x = torch.zeros(1, dtype=torch.float32)
    cos, sin = rotary(x, position_ids)
    shape = (*ids.shape, text.head_dim)
    assert tuple(cos.shape) == shape and tuple(sin.shape) == shape, (
        f"{which}: cos/sin have shapes {tuple(cos.shape)}, {tuple(sin.shape)}, expected (B, S, head_dim) = {shape}"
    )
    axes = mrope_axes(sections)
    err = _max_err((cos, sin), mrope_cos_sin(position_ids, text.head_dim, theta, axes))
    assert err < 1e-4, (
        f"{which}: cos/sin differ from interleaved MRoPE (sections {sections}, theta {theta:g}) by {err:.3g}"
    )
    chunked = mrope_cos_sin(position_ids, text.head_dim, theta, chunked_axes(sections))
    chunked_err = _max_err((cos, sin), chunked)
    assert chunked_err > 100 * err, f"{which}: these prompts do not tell interleaved from chunked MRoPE"
    cos_2d, sin_2d = rotary(x, position_ids[0])
    want_2d = mrope_cos_sin(position_ids[0].expand(3, -1, -1), text.head_dim, theta, axes)
    err_2d = _max_err((cos_2d, sin_2d), want_2d)
    assert tuple(cos_2d.shape) == shape and err_2d < 1e-4, (
        f"{which}: with (B, S) position ids cos/sin are {tuple(cos_2d.shape)}, off by {err_2d:.3g}"
    )
    qwen3vl_record.holds(
        f"cos/sin {shape} from (3, B, S) and from (B, S) ids; interleaved sections {sections} within {err:.1e} "
        f"(chunked would be off by {chunked_err:.2f})"
    )
