"""Modified-file variants, each generated from the installed golden file's text.

Generating them (instead of storing copies) keeps the repository free of transformers' source and
keeps every variant in step with the golden file. A variant is harmless when it must pass every
check, wrong when some check must fail; ``expect`` is a fragment of that check's message and
``check`` names the check (``"source"`` is ``pytest_qwen3vl.source.diff.check_one_diff``). To add a
kind of variant, write a ``golden_text -> str`` function and register it with ``_add``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from pytest_qwen3vl.source.files import GOLDEN_IF_LINE, installed_golden_path, reference_modified_text

PLACE = "Qwen3VLVisionModel.forward"
INDENT = " " * 12
FLAG = 'getattr(self, "_skip_deepstack_export", False)'
TRACING = "torch.jit.is_tracing()"


@dataclass(frozen=True)
class Variant:
    """A modified file built from golden text, and what the checks must say about it."""

    name: str
    make: Callable[[str], str]
    harmless: bool
    expect: str = ""
    place: str = PLACE  # where the source check reports the (first) change
    check: str = "source"
    needs: str = ""  # text the golden file must contain for the variant to be a fork one could write

    def applies(self) -> bool:
        """Whether the installed golden file can carry this variant (5.x no longer imports every name)."""
        return self.needs in golden_text()


VARIANTS: dict[str, Variant] = {}


def _add(variant: Variant) -> None:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} is defined twice")
    VARIANTS[variant.name] = variant


@cache
def golden_text() -> str:
    """The installed transformers' ``modeling_qwen3_vl.py``."""
    return installed_golden_path().read_text(encoding="utf-8")


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its single ``old`` replaced; fails loudly if golden no longer has it once."""
    if text.count(old) != 1:
        raise ValueError(f"expected exactly one {old.strip()!r} in the golden text, found {text.count(old)}")
    return text.replace(old, new)


def with_condition(condition: str) -> Callable[[str], str]:
    """A generator that replaces the DeepStack ``if``'s test with ``condition`` (one line)."""
    return lambda golden: replace_once(golden, GOLDEN_IF_LINE, f"{INDENT}if {condition}:\n")


def _split_lines(golden: str) -> str:
    block = (
        f"{INDENT}if (\n"
        f"{INDENT}    layer_num in self.deepstack_visual_indexes\n"
        f"{INDENT}    and not (\n"
        f"{INDENT}        getattr(self, '_skip_deepstack_export', False)\n"
        f"{INDENT}        or torch.jit.is_tracing()\n"
        f"{INDENT}    )\n"
        f"{INDENT}):\n"
    )
    return replace_once(golden, GOLDEN_IF_LINE, block)


def _with_comments(golden: str) -> str:
    block = (
        f"\n{INDENT}# Export builds set _skip_deepstack_export; tracing also skips DeepStack so\n"
        f"{INDENT}# that the exported graph has a single output.\n"
        f"{INDENT}if (\n"
        f"{INDENT}    layer_num in self.deepstack_visual_indexes  # a DeepStack layer\n"
        f'{INDENT}    and not (getattr(self, "_skip_deepstack_export", False) or torch.jit.is_tracing())\n'
        f"{INDENT}):  # end of the export condition\n"
        f"{INDENT}    # unchanged from golden below\n"
    )
    return replace_once(golden, GOLDEN_IF_LINE, block)


def _changed_body(golden: str) -> str:
    old = f"{INDENT}    deepstack_feature_lists.append(deepstack_feature)\n"
    return replace_once(reference_modified_text(golden), old, old.replace("append(", "insert(0, "))


def _extra_change_other_function(golden: str) -> str:
    old = "        return self.linear_fc2(self.act_fn(self.linear_fc1(hidden_state)))\n"
    return replace_once(reference_modified_text(golden), old, old.replace("self.act_fn(", "torch.nn.functional.gelu("))


def _absolute_import(golden: str) -> str:
    return replace_once(
        reference_modified_text(golden),
        "from ...activations import ACT2FN\n",
        "from transformers.activations import ACT2FN\n",
    )


def _extra_tracing_branch(golden: str) -> str:
    old = "        deepstack_feature_lists = []\n"
    new = f"        if {TRACING}:\n            hidden_states = hidden_states.contiguous()\n{old}"
    return replace_once(reference_modified_text(golden), old, new)


_add(Variant("reference", reference_modified_text, harmless=True))
_add(Variant("split_lines", _split_lines, harmless=True))
_add(Variant("with_comments", _with_comments, harmless=True))
_add(Variant("no_final_newline", lambda g: reference_modified_text(g).rstrip("\n"), harmless=True))
_add(
    Variant(
        "de_morgan",
        with_condition(f"layer_num in self.deepstack_visual_indexes and not {FLAG} and not {TRACING}"),
        harmless=True,
    )
)
# The report's condition plus a predicate that is False in all 8 of its combinations: they differ under
# torch.export (both skip: the source check passes with a note) and torch.compile (the second skips: compiled
# inference loses DeepStack, so the source check fails it).
_add(
    Variant(
        "is_exporting",
        with_condition(
            f"layer_num in self.deepstack_visual_indexes and not ({FLAG} or {TRACING} or torch.compiler.is_exporting())"
        ),
        harmless=True,
    )
)
_add(
    Variant(
        "dynamo_compiling",
        with_condition(
            f"layer_num in self.deepstack_visual_indexes and not ({FLAG} or {TRACING} or is_torchdynamo_compiling())"
        ),
        harmless=False,
        expect="skips DeepStack under torch.compile with the flag unset, where the report's condition runs it",
        needs="import TransformersKwargs, auto_docstring, is_torchdynamo_compiling",
    )
)
_add(
    Variant(
        "inverted",
        with_condition(f"layer_num in self.deepstack_visual_indexes and ({FLAG} or {TRACING})"),
        harmless=False,
        expect="in eager mode with the flag unset, the modified file skips DeepStack (expected: run)",
    )
)
_add(
    Variant(
        "no_tracing_clause",
        with_condition(f"layer_num in self.deepstack_visual_indexes and not {FLAG}"),
        harmless=False,
        expect="while tracing with the flag unset, the modified file runs DeepStack (expected: skip)",
    )
)
_add(
    Variant(
        "flag_renamed",
        with_condition(
            f'layer_num in self.deepstack_visual_indexes and not (getattr(self, "_skip_export", False) or {TRACING})'
        ),
        harmless=False,
        expect="reads another flag, `'_skip_export'`",
    )
)
_add(
    Variant(
        "flag_default_true",
        with_condition(
            'layer_num in self.deepstack_visual_indexes and not (getattr(self, "_skip_deepstack_export", True)'
            f" or {TRACING})"
        ),
        harmless=False,
        expect="in eager mode with the flag unset, the modified file skips DeepStack (expected: run)",
    )
)
_add(
    Variant(
        "flag_plain_attribute",
        with_condition(
            f"layer_num in self.deepstack_visual_indexes and not (self._skip_deepstack_export or {TRACING})"
        ),
        harmless=False,
        expect="raises AttributeError while the flag was never set",
    )
)
_add(Variant("changed_body", _changed_body, harmless=False, expect="the body of the DeepStack `if` changed"))
_add(
    Variant(
        "extra_change_other_function",
        _extra_change_other_function,
        harmless=False,
        expect="unexpected change (changed) at Qwen3VLVisionMLP.forward",
        place="Qwen3VLVisionMLP.forward",
    )
)
_add(
    Variant(
        "absolute_import",
        _absolute_import,
        harmless=False,
        expect="unexpected change (import) at <module>",
        place="<module>",
    )
)
_add(
    Variant(
        "extra_tracing_branch",
        _extra_tracing_branch,
        harmless=False,
        expect=f"unexpected change (added) at {PLACE}",
    )
)
_add(Variant("unchanged", lambda g: g, harmless=False, expect="no change"))


def _unguarded(golden: str) -> str:
    """The DeepStack ``if`` dropped and its body dedented: every layer looks up a merger, so layer 0 raises."""
    start = golden.index(GOLDEN_IF_LINE)
    last = f"{INDENT}    deepstack_feature_lists.append(deepstack_feature)\n"
    end = golden.index(last, start) + len(last)
    body = golden[start + len(GOLDEN_IF_LINE) : end].splitlines(keepends=True)
    return golden[:start] + "".join(line[4:] for line in body) + golden[end:]


_add(Variant("unguarded", _unguarded, harmless=False, expect="was replaced, not only its test"))
