"""The report's claims, in the report's order, each with a stable id (tests name it in ``qwen3vl_claim``).

Statements quote the one-slide report that comes with the modified file; the last claims come from
what the export must also do for a downstream builder (it must compute what PyTorch computes, on a
known exporter), in the runtimes that consume it, and for the file a user ships.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """One claim of the report: what it says and where it says it."""

    number: int
    id: str
    section: str
    statement: str
    reads: str | None  # the area of the golden file it reads (``source.coverage.AREAS``), None: none


_SECTIONS = {
    "ref": "Reference vs Modified",
    "diff": "Only code difference",
    "math": "Shared math / behavior",
    "sizes": "Image sizes accepted by the vision model",
    "bottom": "Bottom line",
    "export": "Export, as a downstream builder runs it",
    "runtime": "In the runtime",
    "artefact": "Your export",
}
# Shown only when the run names files with --qwen3vl-onnx: one line per file (and grid) judged.
ARTEFACT_SECTION = _SECTIONS["artefact"]

_CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("ref", "golden-version", "Golden is HF transformers v4.57.6's modeling_qwen3_vl.py."),
    ("ref", "one-diff", "Modified = same file + one conditional."),
    ("ref", "golden-deepstack-always",
     "Golden: DeepStack always runs at layers in deepstack_visual_indexes."),
    ("ref", "modified-deepstack-gated", "Modified: DeepStack runs only when not exporting."),
    ("ref", "golden-onnx-outputs", "Golden traced as-is has 3 ONNX outputs (pooled + 2 deepstack)."),
    ("ref", "modified-onnx-outputs",
     "Modified has 1 ONNX output (pooled_embeds) when the export flag is set."),
    ("diff", "deepstack-condition",
     "Run DeepStack merger at layer l iff l in deepstack_visual_indexes and "
     "not (_skip_deepstack_export or torch.jit.is_tracing())."),
    ("diff", "deepstack-body", "The DeepStack branch body is the same as golden's."),
    ("diff", "deepstack-not-traced",
     "Builder sets _skip_deepstack_export = True: DeepStack not traced, one output path."),
    ("math", "vision-rope",
     "Vision RoPE: theta = 1e4; inv_freq_i = theta^(-2i/d); freqs = seq (outer) inv_freq; "
     "cos/sin applied to (q, k)."),
    ("math", "vision-rope-dynamic", "Vision RoPE: no precomputed table; dynamic seqlen."),
    ("math", "vision-data-flow",
     "pixel_values -> patch_embed -> pos_embed + rotary -> blocks -> merger -> pooled_embeds; "
     "DeepStack taps intermediate layers."),
    ("math", "text-mrope",
     "Text MRoPE: position_ids (3, B, S); interleaved MRoPE; cos, sin from inv_freq and position_ids."),
    ("math", "output-contract",
     "Vision forward returns (hidden_states, deepstack_feature_lists); the export wrapper uses outputs[0]."),
    ("sizes", "input-contract", "pixel_values in R^(N x 1536), image_grid_thw in Z^(M x 3)."),
    ("sizes", "patch-dim", "1536 = 3 x p_t x p^2 with p = 16, p_t = 2."),
    ("sizes", "grid-from-size", "grid_h = ceil(H_img / 16), grid_w = ceil(W_img / 16), N = T * grid_h * grid_w."),
    ("sizes", "pipeline-384", "384x384 images give grid (1, 24, 24), N = 576 patches."),
    ("sizes", "dynamic-n",
     "ONNX uses dynamic N; other (T, H, W) work if the export used a matching grid."),
    ("bottom", "export-pooled-embeds",
     "One ONNX output: pooled_embeds in R^(num_merged_patches x 2560)."),
    ("bottom", "runtime-equivalence",
     "When not exporting, behavior and weights match golden."),
    ("export", "onnx-parity",
     "The runtime's pooled_embeds match PyTorch's (ONNX Runtime unless --qwen3vl-runtime names others)."),
    ("export", "export-graph-vs-golden",
     "What the change buys: golden and modified exported through the same pooled wrapper."),
    ("export", "dynamo-export", "The export works with torch.onnx's default (dynamo) exporter."),
    ("export", "trace-hazards", "The change adds no trace hazard (TracerWarning)."),
    ("export", "grid-free-export",
     "One file for every grid: the grid-free recipe's export reproduces golden on every sweep grid."),
    ("export", "grid-free-dynamo",
     "The grid-free recipe also exports with torch.onnx's dynamo exporter and serves every sweep grid."),
    ("export", "pipeline-deepstack-kept",
     "An export that keeps DeepStack (pooled_embeds + one output per DeepStack layer), fed to golden's "
     "language model, computes what golden computes."),
    ("export", "pipeline-like-golden",
     "The exported pipeline (the language model fed pooled_embeds only) behaves like golden."),
    ("runtime", "genai-preprocessing",
     "onnxruntime-genai's image processor gives the pixel values and grid of transformers' image processor."),
    ("runtime", "genai-image-features",
     "genai's image features (input embeddings at the image pads) equal golden's pooled embeddings."),
    ("runtime", "genai-deepstack-off",
     "genai's per-step logits and greedy tokens match transformers with DeepStack off."),
    ("runtime", "genai-like-golden",
     "The exported pipeline behaves like golden (DeepStack on): same logits and greedy tokens."),
    ("runtime", "genai-other-grid",
     "An image whose grid differs from the traced one fails loudly in genai with the report's file."),
    ("runtime", "genai-grid-free",
     "With the grid-free file, an image whose grid differs from the traced one works in genai."),
    ("artefact", "artefact-interface",
     "The file's inputs (pixel values, grid) and outputs (pooled, DeepStack) are recognised and fit the config."),
    ("artefact", "artefact-parity",
     "On each grid and runtime (ONNX Runtime unless --qwen3vl-runtime names others), the file's outputs match "
     "golden PyTorch with the same weights, within the tolerance of its weight type or of the precision that ran."),
    ("artefact", "artefact-weights",
     "The file's weights are the checkpoint's: equal, rounded to bf16 or fp16, or quantized."),
    ("artefact", "artefact-graph",
     "On each grid the file runs, it computes golden's function of the weights it holds, within the tolerance "
     "of the arithmetic it declares."),
    ("artefact", "artefact-grids", "The file serves every grid of the run."),
    ("artefact", "artefact-deepstack",
     "Each DeepStack output the file has carries golden's DeepStack feature of its position."),
    ("artefact", "artefact-where",
     "Every module's output (patch embedding, position add, blocks, merger) matches golden on every grid."),
)

# What a claim reads of the golden file, where it is not the vision tower: a claim whose area differs
# from every verified version's says so in its row. None: the claim reads the files as text, the image
# processor or the user's ONNX file, not the modeling code.
_READS: dict[str, str | None] = {
    "golden-version": None, "one-diff": None, "deepstack-condition": None, "deepstack-body": None,
    "grid-from-size": None, "pipeline-384": None, "genai-preprocessing": None, "artefact-interface": None,
    "output-contract": "output", "text-mrope": "text-mrope",
    "pipeline-deepstack-kept": "whole", "pipeline-like-golden": "whole", "genai-deepstack-off": "whole",
    "genai-like-golden": "whole",
}

CATALOGUE: tuple[Claim, ...] = tuple(
    Claim(number, claim_id, _SECTIONS[section], statement, _READS.get(claim_id, "vision"))
    for number, (section, claim_id, statement) in enumerate(_CLAIMS, start=1)
)
BY_ID: dict[str, Claim] = {claim.id: claim for claim in CATALOGUE}
