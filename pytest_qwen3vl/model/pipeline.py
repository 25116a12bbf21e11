"""The whole model end to end: what a language model computes from golden's vision outputs, or
from what an exported vision file gives a runtime.

``build_full_model`` makes the family's whole model (``Qwen3VLForConditionalGeneration``,
``Qwen3VLMoeForConditionalGeneration``, Qwen3-Omni's ``Qwen3OmniMoeThinkerForConditionalGeneration``:
``Family.whole``) from the GOLDEN module's classes whose vision tower is the session's golden vision model
(the very tensors) and whose language model has seeded random weights, or a checkpoint folder's; the
thinker's audio tower is tiny and never runs (``configs.FAMILY_TOWERS``). ``golden_run`` is the full PyTorch forward;
``language_run`` is what a runtime does with exported outputs: the image-pad rows of the token
embeddings replaced by ``pooled_embeds``, and the DeepStack features (if it has them) added to the
image rows after the first language-model layers, as golden adds them.

Two things every run here does on purpose:

- An attention mask of ones is passed, as the processor gives. Without it (and without a cache)
  transformers 4.57.6 reads the constant MRoPE temporal row over the image as packed sequences and
  cuts the image off from the text, so nothing would reach the text positions.
- The text config of a preset is made to fit the vision tower: ``hidden_size`` = the vision
  ``out_hidden_size`` (the tiny presets have 256 and 2560) and more layers than DeepStack features
  (golden adds feature i at layer i only where that layer exists; the tiny preset has 2 layers for
  3 features, which would leave the last feature unused, in golden too); a MoE text model gets the
  tiny sparse MLP of ``configs.FAMILY_TEXT``.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.api import no_init_weights
from pytest_qwen3vl.model.build import share_weights
from pytest_qwen3vl.model.checkpoint import load_language_weights
from pytest_qwen3vl.model.configs import FAMILY_TEXT, ModelSpec, whole_config
from pytest_qwen3vl.model.grids import available_memory
from pytest_qwen3vl.source.families import Family, family_of_module

if TYPE_CHECKING:
    import torch

TEXT_BEFORE, TEXT_AFTER = 6, 12  # text tokens around the image(s) in the prompt
LAST = 4  # "the prompt's last positions" for top-1 agreement and KL
BF16_FROM_PARAMS = 1.5e9  # the 2B has about 2.1 B parameters: from there on the language model runs in bfloat16
# Largest relative L2 (hidden states or logits) that still counts as "computes what golden computes",
# by the language model's dtype. Measured (tiny, 1x24x24, ONNX Runtime DeepStack export fed back):
# float32 1.3e-6, bfloat16 1.2e-2 (ORT's 1e-6 differences flip bfloat16 roundings). Feeding no
# DeepStack, or the features swapped or one layer late, gave 0.35 to 0.8 on the same model.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}
# What a process building the whole model holds beyond its tensors: the libraries, the activations.
OVERHEAD_BYTES = 3 << 29


def pipeline_config(spec: ModelSpec, family: Family) -> Any:
    """The ``family``'s config for the whole model (``configs.whole_config``); a preset's text model gets
    more layers than DeepStack features and the family's ``FAMILY_TEXT`` fields it lacks, as the module
    docstring says."""
    if spec.checkpoint is not None or spec.text is None:
        return whole_config(spec, family=family)
    depth = len(spec.vision["deepstack_visual_indexes"])
    added = {key: value for key, value in FAMILY_TEXT.get(family.name, {}).items() if key not in spec.text}
    layers = max(int(spec.text.get("num_hidden_layers", 0)), depth + 1)
    return whole_config(spec, text={**added, "num_hidden_layers": layers}, family=family)


def parameter_counts(golden: ModuleType, config: Any) -> tuple[int, int]:
    """Parameters of golden's whole model for ``config`` and of its vision tower, counted on the meta
    device (nothing allocated)."""
    import torch

    with torch.device("meta"):
        model = getattr(golden, family_of_module(golden).whole)(config)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in parts(model).holder.visual.parameters())


def language_dtype(golden: ModuleType, config: Any) -> torch.dtype:
    """float32, or bfloat16 for a model of ``BF16_FROM_PARAMS`` parameters or more: the released
    checkpoints' dtype, and half the memory (a 4B language model in float32 is 16 GB)."""
    import torch

    return torch.bfloat16 if parameter_counts(golden, config)[0] >= BF16_FROM_PARAMS else torch.float32


@dataclass(frozen=True)
class WholeModelSize:
    """What building and running golden's whole model takes: its parameters (the vision tower's among
    them), the language model's dtype, and the bytes a process needs for it (``whole_model_size``)."""

    parameters: int
    vision: int
    dtype: str
    need: int

    def text(self) -> str:
        return (f"the whole model ({self.parameters / 1e9:.1f} B parameters, language model in {self.dtype}) "
                f"needs about {self.need / 2**30:.1f} GiB")


def whole_model_size(golden: ModuleType, spec: ModelSpec) -> WholeModelSize:
    """The whole model's parameters in ``language_dtype`` (its own vision tower among them until golden's
    replaces it), golden's vision tower in float32 beside them, a checkpoint's language tensors once
    more while they are read, and ``OVERHEAD_BYTES``: at 4B 11.3 GiB, against 11.1 GiB measured."""
    import torch

    config = pipeline_config(spec, family_of_module(golden))
    total, vision = parameter_counts(golden, config)
    dtype = torch.bfloat16 if total >= BF16_FROM_PARAMS else torch.float32
    read = (total - vision) * dtype.itemsize if spec.checkpoint is not None else 0
    need = total * dtype.itemsize + 4 * vision + read + OVERHEAD_BYTES
    return WholeModelSize(total, vision, str(dtype).removeprefix("torch."), need)


def check_fits(golden: ModuleType, spec: ModelSpec, available: int | None = None) -> None:
    """Refuse (``ConfigError``) a whole model built mid-run only to show a figure: a preset's seeded
    language model from ``BF16_FROM_PARAMS`` on (random weights at that size cost gigabytes and show what
    the tiny one shows), and one that would not fit in the memory available now (``whole_model_size``)."""
    size = whole_model_size(golden, spec)
    if spec.checkpoint is None and size.parameters >= BF16_FROM_PARAMS:
        language = (size.parameters - size.vision) / 1e9
        raise ConfigError(f"{spec.name}: a seeded language model of {language:.1f} B parameters is not built for it: "
                          "name a checkpoint folder as the config for its own")
    have = available if available is not None else available_memory()
    if size.need > have:
        raise ConfigError(f"{spec.name}: {size.text()}, {have / 2**30:.1f} GiB are available")


def build_full_model(golden: ModuleType, spec: ModelSpec, vision: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Golden's whole model around ``vision`` (the very module), with a language model seeded from
    ``seed``, or the spec's checkpoint's, in ``language_dtype``; eval mode.

    A checkpoint's language model is built in its dtype without a random initialisation (every
    tensor is loaded), so a 2B model never exists in float32 beside the one loaded; a preset's is
    initialised in that dtype directly.
    """
    import torch

    family = family_of_module(golden)
    config = pipeline_config(spec, family)
    dtype = language_dtype(golden, config)
    with torch.random.fork_rng(devices=[]), no_init_weights() if spec.checkpoint else nullcontext():
        torch.manual_seed(seed)
        model = getattr(golden, family.whole)._from_config(config, dtype=dtype)
    holder = parts(model).holder
    unshared = share_weights(vision, holder.visual)
    if unshared:
        raise ConfigError(f"{spec.name}: the vision tower does not fit the whole model: {unshared[:3]}")
    holder.visual = vision  # its non-persistent buffers too, computed in float32
    if spec.checkpoint is not None:
        load_language_weights(model, spec.checkpoint, parts(model).prefix)
    return model.eval()


@dataclass(frozen=True)
class Parts:
    """Where a whole model keeps what the runs here use. ``holder`` has the vision tower (``visual``),
    ``get_rope_index``, the token embeddings and a forward that takes the image; ``language`` is the text
    model that adds the DeepStack features. Qwen3-VL's and MoE's ``model.model`` is the holder, with the
    text model as its ``language_model``; Omni's thinker is its own holder, with the text model as ``model``."""

    holder: Any
    language: Any
    prefix: str  # the text model's name in the whole model's state dict, with its dot


def parts(model: Any) -> Parts:
    """The ``Parts`` of golden's whole model, read from the attributes it has."""
    inner = model.model
    if hasattr(inner, "language_model"):
        return Parts(inner, inner.language_model, "model.language_model.")
    return Parts(model, inner, "model.")


def image_counts(grid_thw: torch.Tensor, merge: int) -> list[int]:
    """Merged tokens per image: t * h * w / merge**2."""
    return [int(n) for n in (grid_thw.prod(-1) // merge**2).tolist()]


def make_prompt(counts: list[int], config: Any, seed: int) -> torch.Tensor:
    """``text x 6, then per image <vision_start> <image_pad> x n <vision_end>, then text x 12``, (1, S)."""
    import torch

    special = {config.vision_start_token_id, config.vision_end_token_id, config.image_token_id, config.video_token_id}
    vocab = config.text_config.vocab_size
    generator = torch.Generator().manual_seed(seed + 1)
    text = [t for t in torch.randint(0, vocab, (4 * (TEXT_BEFORE + TEXT_AFTER),), generator=generator).tolist()
            if t not in special][: TEXT_BEFORE + TEXT_AFTER]
    ids = text[:TEXT_BEFORE]
    for count in counts:
        ids += [config.vision_start_token_id, *[config.image_token_id] * count, config.vision_end_token_id]
    return torch.tensor([ids + text[TEXT_BEFORE:]])


@dataclass
class PipelineRun:
    """Final-norm hidden states (1, S, H) and logits (1, S, V), in float32."""

    hidden: torch.Tensor
    logits: torch.Tensor


def golden_run(model: Any, ids: torch.Tensor, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> PipelineRun:
    """The full PyTorch forward of golden's whole model on the prompt and the image(s); the final hidden
    states are the text model's output, as the holder's forward computes them (Omni's thinker returns
    only logits)."""
    import torch

    from pytest_qwen3vl.model.api import token_types

    found = parts(model)
    hidden: list[torch.Tensor] = []
    hook = found.language.register_forward_hook(lambda module, args, output: hidden.append(output[0]))
    try:
        with torch.no_grad():
            found.holder(
                input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid_thw,
                attention_mask=torch.ones_like(ids), use_cache=False,
                **token_types(found.holder.forward, ids, model.config.image_token_id),
            )
            return PipelineRun(hidden[0].float(), model.lm_head(hidden[0]).float())
    finally:
        hook.remove()


def language_run(
    model: Any, ids: torch.Tensor, grid_thw: torch.Tensor, pooled: Any, deepstack: list[Any] | None
) -> PipelineRun:
    """The language model fed exported outputs (arrays or tensors): pooled into the image rows, and
    ``deepstack[i]`` added at layer i (None: no DeepStack, as a pooled-only runtime does)."""
    import torch

    from pytest_qwen3vl.model.api import deepstack_mask, rope_index

    found = parts(model)
    with torch.no_grad():
        embeds = found.holder.get_input_embeddings()(ids)
        mask = ids == model.config.image_token_id
        rows = torch.as_tensor(pooled).to(embeds.dtype)
        embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), rows)
        attention = torch.ones_like(ids)
        position_ids, _ = rope_index(found.holder, ids, grid_thw, attention, model.config.image_token_id)
        features = None if deepstack is None else [torch.as_tensor(d).to(embeds.dtype) for d in deepstack]
        out = found.language(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention,
            visual_pos_masks=deepstack_mask(found.language, mask, embeds.shape[-1]), deepstack_visual_embeds=features,
            use_cache=False,
        )
        hidden = out.last_hidden_state
        return PipelineRun(hidden.float(), model.lm_head(hidden).float())


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / b.double().norm())


def tolerance(model: Any) -> float:
    """The ``TOLERANCE`` of the language model's dtype."""
    return TOLERANCE[str(model.lm_head.weight.dtype).removeprefix("torch.")]


@dataclass(frozen=True)
class PipelineGap:
    """How far a run is from golden's: relative L2 of the final hidden states at the image rows and at
    the text after the last image, and of all logits; top-1 agreement and KL(golden || run), in nats,
    at the prompt's last positions. Relative L2 decides; top-1 and KL are shown (on random weights the
    language model is near uniform, so they move little)."""

    image: float
    text_after: float
    logits: float
    top1_last: float
    kl_last: float

    @property
    def worst(self) -> float:
        return max(self.image, self.text_after, self.logits)

    def text(self) -> str:
        return (
            f"relative L2 image rows {self.image:.2g}, text after the image {self.text_after:.2g}, "
            f"logits {self.logits:.2g}; top-1 agreement at the last {LAST} positions {self.top1_last:.2f}, "
            f"KL {self.kl_last:.2g} nats"
        )


def pipeline_gap(run: PipelineRun, golden: PipelineRun, ids: torch.Tensor, image_token_id: int) -> PipelineGap:
    """``run`` against ``golden`` on the same prompt."""
    import torch.nn.functional as F

    image = (ids[0] == image_token_id).nonzero().flatten()
    last = int(image[-1])
    g, r = golden.logits[0, -LAST:].double(), run.logits[0, -LAST:].double()
    kl = F.kl_div(F.log_softmax(r, -1), F.log_softmax(g, -1), log_target=True, reduction="none").sum(-1)
    return PipelineGap(
        image=_rel_l2(run.hidden[0, image], golden.hidden[0, image]),
        text_after=_rel_l2(run.hidden[0, last + 1 :], golden.hidden[0, last + 1 :]),
        logits=_rel_l2(run.logits, golden.logits),
        top1_last=float((g.argmax(-1) == r.argmax(-1)).double().mean()),
        kl_last=float(kl.mean()),
    )
