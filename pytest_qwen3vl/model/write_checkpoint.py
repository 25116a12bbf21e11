"""A checkpoint folder laid out as a released Qwen3-VL one, made offline from a preset and a seed.

What ``qwen3vl-checkpoint`` writes: ``config.json`` (text and vision configs), ``model.safetensors``
with the released tensor names (``model.visual.*``, ``model.language_model.*``, ``lm_head.weight``),
a tokenizer (a small byte-level BPE trained on local text, with Qwen's split pattern and special
tokens, saved as ``Qwen2TokenizerFast``) and ``preprocessor_config.json``. The vision tower's
weights are the preset+seed golden model's (``model.build.build_golden``), so files exported from
the plugin's session and from this folder agree; ``--qwen3vl-config=FOLDER`` loads exactly them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.configs import TEXT_PRESETS, VISION_PRESETS, ModelSpec, whole_config
from pytest_qwen3vl.model.pipeline import BF16_FROM_PARAMS
from pytest_qwen3vl.model.references import (
    RELEASED_IMAGE_MEAN,
    RELEASED_IMAGE_STD,
    RELEASED_MERGE_SIZE,
    RELEASED_PATCH_SIZE,
    RELEASED_SIZE,
    RELEASED_TEMPORAL_PATCH_SIZE,
)

if TYPE_CHECKING:
    import torch

# Qwen's special tokens, appended after the BPE vocabulary in this order (as in the released tokenizer).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
)
TOKENIZER_SIZE = 1024  # BPE merges and bytes plus the special tokens: the tiny text vocab_size
# The released tokenizer.json's pre-tokenizer split pattern.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The text model's context: small, so genai's builder writes a small cos/sin cache (its default,
# max_position_embeddings 128000, makes a 71 MB cache for a 1 MB decoder).
CONTEXT_LENGTH = 4096
# Default init (std 0.02) gives a small model near-flat logits; text weights drawn wider separate
# greedy choices, so a changed token is a changed model, not a tie broken differently. Not for the
# released sizes: 28 layers drawn that wide are chaotic, and bfloat16 roundings alone then move the
# 2B's outputs as much as dropping DeepStack does (relative L2 0.038 against 0.042); at the default
# init they move them by 0.024 and dropping DeepStack by 0.5 (1x24x24, seed 0).
TEXT_WEIGHT_STD = 0.08

Progress = Callable[[str], None]


def checkpoint_spec(name: str) -> ModelSpec:
    """The preset with the text context the checkpoint declares, and for tiny the tokenizer's vocabulary."""
    key = name.strip().lower()
    if key not in VISION_PRESETS:
        raise ConfigError(f"no preset {name!r}: expected one of {', '.join(VISION_PRESETS)}")
    text = {**copy.deepcopy(TEXT_PRESETS[key]), "max_position_embeddings": CONTEXT_LENGTH}
    if key == "tiny":
        text["vocab_size"] = TOKENIZER_SIZE
    return ModelSpec(key, copy.deepcopy(VISION_PRESETS[key]), text)


def write_checkpoint(out: Path, name: str, seed: int, *, vision_only: bool = False,
                     progress: Progress | None = None) -> Path:
    """Write the checkpoint folder ``out`` (absent or empty) and return it."""
    import torch

    say = progress or (lambda _message: None)
    spec = checkpoint_spec(name)
    with staged_folder(out) as staging:
        say("training the tokenizer")
        ids = write_tokenizer(staging)
        config = full_config(spec, ids)
        say(f"building the {spec.name} golden vision tower (seed {seed})")
        vision_state = golden_vision_state(spec, seed)
        if vision_only:
            from safetensors.torch import save_file

            config.save_pretrained(staging)
            save_file({f"model.visual.{k}": v.contiguous() for k, v in vision_state.items()},
                      str(staging / "model.safetensors"), metadata={"format": "pt"})
        else:
            say("building the language model")
            model = full_model(config, vision_state, seed)
            if model.lm_head.weight.dtype == torch.bfloat16:
                say("the language model in bfloat16, as released (the vision tower stays float32)")
            say("saving model.safetensors")
            model.save_pretrained(staging, safe_serialization=True)
        write_preprocessor_config(staging)
    say(f"wrote {out}")
    return out


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A new sibling of ``out`` to write into, renamed to ``out`` when the block ends well, removed
    when it does not: a failed or interrupted command leaves no partial ``out`` for its retry to refuse.

    ``out`` must be absent or an empty folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"{out}: cannot be written: {exc.strerror or exc}") from None
    try:
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def golden_vision_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The vision tower's state dict as the session's golden model draws it for this preset and seed."""
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from pytest_qwen3vl.model.build import build_golden

    state: dict[str, torch.Tensor] = build_golden(modeling_qwen3_vl, spec, seed).state_dict()
    return state


def full_config(spec: ModelSpec, ids: dict[str, int]) -> Any:
    """``configs.whole_config`` with the tokenizer's special ids (the preset's tying of embeddings)."""
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
    return whole_config(spec, tokens, text={"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]})


def full_model(config: Any, vision_state: dict[str, torch.Tensor], seed: int) -> torch.nn.Module:
    """``Qwen3VLForConditionalGeneration``: the golden vision tower and a seeded language model; from
    2B parameters on (``BF16_FROM_PARAMS``) at the default init and in bfloat16, as released."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.float32).eval()
        released_size = sum(p.numel() for p in model.parameters()) >= BF16_FROM_PARAMS
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if (not released_size and not name.startswith("model.visual.") and parameter.dim() >= 2
                        and "norm" not in name):
                    parameter.normal_(0.0, TEXT_WEIGHT_STD)
    model.model.visual.load_state_dict(vision_state, strict=True)
    if released_size:
        model.model.language_model.to(torch.bfloat16)
        model.lm_head.to(torch.bfloat16)
    text = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.bos_token_id,
        do_sample=False,
    )
    return model


def write_tokenizer(out: Path) -> dict[str, int]:
    """Train a byte-level BPE on the standard library's own text, save it; return the special ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import Qwen2TokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = [(stdlib / name).read_text(encoding="utf-8") for name in ("this.py", "textwrap.py", "string.py")]
    corpus.append("Describe the image. A picture of a cat, a dog and a red square on a white table.\n" * 4)
    tokenizer = Tokenizer(models.BPE(byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_SIZE - len(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    fast = Qwen2TokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        bos_token=None, errors="replace", clean_up_tokenization_spaces=False, model_max_length=CONTEXT_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(out)
    ids = {token: int(str(fast.convert_tokens_to_ids(token))) for token in SPECIAL_TOKENS}
    if len(fast) != TOKENIZER_SIZE:
        raise ConfigError(f"the tokenizer has {len(fast)} tokens, not {TOKENIZER_SIZE}: the corpus is too small")
    return ids


def preprocessor_config() -> dict[str, Any]:
    """``preprocessor_config.json`` as the released checkpoints ship it."""
    return {
        "size": dict(RELEASED_SIZE),
        "patch_size": RELEASED_PATCH_SIZE,
        "temporal_patch_size": RELEASED_TEMPORAL_PATCH_SIZE,
        "merge_size": RELEASED_MERGE_SIZE,
        "image_mean": list(RELEASED_IMAGE_MEAN),
        "image_std": list(RELEASED_IMAGE_STD),
        "processor_class": "Qwen3VLProcessor",
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }


def write_preprocessor_config(out: Path) -> None:
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
