"""The report's claims, in the report's order, each with a stable id and the tests that decide it.

Statements quote the one-slide report that comes with the modified file; the last claims come from
what the export must also do for a downstream builder (it must compute what PyTorch computes, on a
known exporter), in the runtimes that consume it, and for the file a user ships.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """One claim of the report: what it says, where it says it, and which suite module decides it."""

    number: int
    id: str
    section: str
    statement: str
    decided_by: str
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

_CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("ref", "golden-version", "Golden is HF transformers v4.57.6's modeling_qwen3_vl.py.", "test_source"),
    ("ref", "one-diff", "Modified = same file + one conditional.", "test_source"),
    ("ref", "golden-deepstack-always",
     "Golden: DeepStack always runs at layers in deepstack_visual_indexes.", "test_deepstack"),
    ("ref", "modified-deepstack-gated", "Modified: DeepStack runs only when not exporting.", "test_deepstack"),
    ("ref", "golden-onnx-outputs", "Golden traced as-is has 3 ONNX outputs (pooled + 2 deepstack).", "test_export"),
    ("ref", "modified-onnx-outputs",
     "Modified has 1 ONNX output (pooled_embeds) when the export flag is set.", "test_export"),
    ("diff", "deepstack-condition",
     "Run DeepStack merger at layer l iff l in deepstack_visual_indexes and "
     "not (_skip_deepstack_export or torch.jit.is_tracing()).", "test_source"),
    ("diff", "deepstack-body", "The DeepStack branch body is the same as golden's.", "test_source"),
    ("diff", "deepstack-not-traced",
     "Builder sets _skip_deepstack_export = True: DeepStack not traced, one output path.", "test_export"),
    ("math", "vision-rope",
     "Vision RoPE: theta = 1e4; inv_freq_i = theta^(-2i/d); freqs = seq (outer) inv_freq; "
     "cos/sin applied to (q, k).", "test_math"),
    ("math", "vision-rope-dynamic", "Vision RoPE: no precomputed table; dynamic seqlen.", "test_math"),
    ("math", "vision-data-flow",
     "pixel_values -> patch_embed -> pos_embed + rotary -> blocks -> merger -> pooled_embeds; "
     "DeepStack taps intermediate layers.", "test_math"),
    ("math", "text-mrope",
     "Text MRoPE: position_ids (3, B, S); interleaved MRoPE; cos, sin from inv_freq and position_ids.",
     "test_mrope"),
    ("math", "output-contract",
     "Vision forward returns (hidden_states, deepstack_feature_lists); the export wrapper uses outputs[0].",
     "test_contracts"),
    ("sizes", "input-contract", "pixel_values in R^(N x 1536), image_grid_thw in Z^(M x 3).", "test_contracts"),
    ("sizes", "patch-dim", "1536 = 3 x p_t x p^2 with p = 16, p_t = 2.", "test_contracts"),
    ("sizes", "grid-from-size", "grid_h = ceil(H_img / 16), grid_w = ceil(W_img / 16), N = T * grid_h * grid_w.",
     "test_preprocessing"),
    ("sizes", "pipeline-384", "384x384 images give grid (1, 24, 24), N = 576 patches.", "test_preprocessing"),
    ("sizes", "dynamic-n",
     "ONNX uses dynamic N; other (T, H, W) work if the export used a matching grid.", "test_export"),
    ("bottom", "export-pooled-embeds",
     "One ONNX output: pooled_embeds in R^(num_merged_patches x 2560).", "test_export"),
    ("bottom", "runtime-equivalence",
     "When not exporting, behavior and weights match golden.", "test_runtime"),
    ("export", "onnx-parity", "ONNX Runtime's pooled_embeds match PyTorch's.", "test_export"),
    ("export", "export-graph-vs-golden",
     "What the change buys: golden and modified exported through the same pooled wrapper.", "test_export"),
    ("export", "dynamo-export", "The export works with torch.onnx's default (dynamo) exporter.", "test_export"),
    ("export", "trace-hazards", "The change adds no trace hazard (TracerWarning).", "test_export"),
    ("export", "grid-free-export",
     "One file for every grid: the grid-free recipe's export reproduces golden on every sweep grid.", "test_recipes"),
    ("export", "grid-free-dynamo",
     "The grid-free recipe also exports with torch.onnx's dynamo exporter and serves every sweep grid.",
     "test_recipes"),
    ("export", "pipeline-deepstack-kept",
     "An export that keeps DeepStack (pooled_embeds + one output per DeepStack layer), fed to golden's "
     "language model, computes what golden computes.", "test_pipeline"),
    ("export", "pipeline-like-golden",
     "The exported pipeline (the language model fed pooled_embeds only) behaves like golden.", "test_pipeline"),
    ("runtime", "genai-preprocessing",
     "onnxruntime-genai's image processor gives the pixel values and grid of transformers' image processor.",
     "test_genai"),
    ("runtime", "genai-image-features",
     "genai's image features (input embeddings at the image pads) equal golden's pooled embeddings.", "test_genai"),
    ("runtime", "genai-deepstack-off",
     "genai's per-step logits and greedy tokens match transformers with DeepStack off.", "test_genai"),
    ("runtime", "genai-like-golden",
     "The exported pipeline behaves like golden (DeepStack on): same logits and greedy tokens.", "test_genai"),
    ("runtime", "genai-other-grid",
     "An image whose grid differs from the traced one fails loudly in genai with the report's file.", "test_genai"),
    ("runtime", "genai-grid-free",
     "With the grid-free file, an image whose grid differs from the traced one works in genai.", "test_genai"),
    ("artefact", "artefact-interface",
     "The file's inputs (pixel values, grid) and outputs (pooled, DeepStack) are recognised and fit the config.",
     "test_artefact"),
    ("artefact", "artefact-parity",
     "On each grid, ONNX Runtime's outputs match golden PyTorch with the same weights, within the tolerance "
     "of the file's weight type.", "test_artefact"),
    ("artefact", "artefact-grids", "The file serves every grid of the run.", "test_artefact"),
    ("artefact", "artefact-deepstack",
     "Each DeepStack output the file has carries golden's DeepStack feature of its position.", "test_artefact"),
    ("artefact", "artefact-where",
     "Every module's output (patch embedding, position add, blocks, merger) matches golden on every grid.",
     "test_artefact"),
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
    Claim(number, claim_id, _SECTIONS[section], statement, decided_by, _READS.get(claim_id, "vision"))
    for number, (section, claim_id, statement, decided_by) in enumerate(_CLAIMS, start=1)
)
BY_ID: dict[str, Claim] = {claim.id: claim for claim in CATALOGUE}
