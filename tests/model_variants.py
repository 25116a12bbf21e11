"""Wrong modified files for the model claims, each generated from the installed golden file's text.

Each variant is the report's reference change plus one mistake in the math the report calls shared,
so the DeepStack change itself is right and only the named claim's test may fail, and only for the
modified model. ``select`` picks that test inside ``module`` (a conformance module) with ``-k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pytest_qwen3vl.source.files import installed_golden_path, reference_modified_text


@dataclass(frozen=True)
class ModelVariant:
    """A wrong modified file and the failure its claim's test must report."""

    name: str
    claim: str
    module: str
    select: str
    change: tuple[str, str]
    expect: str

    def text(self) -> str:
        """The reference modified text with this variant's single replacement."""
        old, new = self.change
        reference = reference_modified_text(golden_text())
        found = reference.count(old)
        if found != 1:
            raise ValueError(f"{self.name}: expected one {old.strip()!r} in the golden text, found {found}")
        return reference.replace(old, new)

    def write(self, folder: Path) -> Path:
        """This variant as ``folder/modeling_qwen3_vl.py``, for ``--qwen3vl-modified``."""
        path = folder / "modeling_qwen3_vl.py"
        path.write_text(self.text(), encoding="utf-8")
        return path


def variant_named(name: str) -> ModelVariant:
    """The wrong variant of that name."""
    return next(v for v in VARIANTS if v.name == name)


@cache
def golden_text() -> str:
    """The installed transformers' ``modeling_qwen3_vl.py``."""
    return installed_golden_path().read_text(encoding="utf-8")


_STORED_TABLE = (
    '        self.register_buffer("inv_freq", inv_freq, persistent=False)\n'
    "\n"
    "    def forward(self, seqlen: int) -> torch.Tensor:\n"
    "        seq = torch.arange(seqlen, device=self.inv_freq.device, dtype=self.inv_freq.dtype)\n"
    "        freqs = torch.outer(seq, self.inv_freq)\n"
    "        return freqs\n",
    '        self.register_buffer("inv_freq", inv_freq, persistent=False)\n'
    '        self.register_buffer("freq_table", torch.outer(torch.arange(64.0), inv_freq))\n'
    "\n"
    "    def forward(self, seqlen: int) -> torch.Tensor:\n"
    "        return self.freq_table[:seqlen]\n",
)

VARIANTS: tuple[ModelVariant, ...] = (
    ModelVariant(
        "theta-20000", "vision-rope", "test_math.py", "rotates_q_and_k",
        ("theta: float = 10000.0", "theta: float = 20000.0"),
        "modified: inv_freq is not 1e4^(-2i/*)",
    ),
    ModelVariant(
        "stored-rope-table", "vision-rope-dynamic", "test_math.py", "made_per_forward",
        _STORED_TABLE,
        "modified: the state dict stores a rotary table: ['rotary_pos_emb.freq_table']",
    ),
    ModelVariant(
        "fixed-rope-table", "vision-rope-dynamic", "test_math.py", "made_per_forward",
        ("freq_table = self.rotary_pos_emb(max_hw)", "freq_table = self.rotary_pos_emb(self.num_grid_per_side)"),
        "modified 1x8x12: rotary table made for 48 positions, largest side 12",
    ),
    ModelVariant(
        "deepstack-taps-one-early", "vision-data-flow", "test_math.py", "data_flow",
        ("for layer_num, blk in enumerate(self.blocks):", "for layer_num, blk in enumerate(self.blocks, start=1):"),
        "modified: DeepStack mergers ran after {'deepstack_merger_list.0': 'blocks.0', *",
    ),
    ModelVariant(
        "mrope-h-w-swapped", "text-mrope", "test_mrope.py", "interleaved",
        ("for dim, offset in enumerate((1, 2), start=1):", "for dim, offset in enumerate((2, 1), start=1):"),
        "modified: cos/sin differ from interleaved MRoPE (sections [24, 20, 20]*",
    ),
    ModelVariant(
        "flattened-outputs", "output-contract", "test_contracts.py", "pooled_and_deepstack",
        ("        return hidden_states, deepstack_feature_lists\n",
         "        return (hidden_states, *deepstack_feature_lists)\n"),
        "modified: the vision forward returns tuple[Tensor(*), Tensor(*), Tensor(*), Tensor(*)], neither *",
    ),
    ModelVariant(
        "first-image-only", "input-contract", "test_contracts.py", "n_by_1536",
        ("        hidden_states = self.patch_embed(hidden_states)\n",
         "        grid_thw = grid_thw[:1]\n        hidden_states = self.patch_embed(hidden_states)\n"),
        "modified 1x8x12+2x4x6+1x4x4: refuses valid inputs: RuntimeError*",
    ),
    ModelVariant(
        "patch-rows-read-t-c", "patch-dim", "test_contracts.py", "patch_dim",
        ("            -1, self.in_channels, self.temporal_patch_size, self.patch_size, self.patch_size\n        )\n",
         "            -1, self.temporal_patch_size, self.in_channels, self.patch_size, self.patch_size\n"
         "        ).transpose(1, 2)\n"),
        "modified: patch_embed does not read each row as one (3, 2, 16, 16) patch*",
    ),
)

# Bit-identical to golden on square grids, wrong wherever H != W: only a sweep with non-square grids
# catches it, so runtime-equivalence must not rest on the run's (square) grid.
POS_EMBED_H_W_SWAPPED = ModelVariant(
    "pos-embed-h-w-swapped", "runtime-equivalence", "test_runtime.py", "bit_identical",
    ("grid_ts, grid_hs, grid_ws = grid_thw[:, 0], grid_thw[:, 1], grid_thw[:, 2]",
     "grid_ts, grid_ws, grid_hs = grid_thw[:, 0], grid_thw[:, 1], grid_thw[:, 2]"),
    "fails on 4 of 9 grids: 1x16x40: pooled embeddings differ from golden: max abs *; 1x40x16: *; 1x18x22: *; "
    "1x24x24+1x16x32: *; holds on 1x16x16, 1x24x24, 1x48x48, 2x16x16, 1x16x16+1x16x16",
)
