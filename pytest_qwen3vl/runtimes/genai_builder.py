"""Run onnxruntime-genai's model builder under the transformers the suite runs on.

``python -m pytest_qwen3vl.runtimes.genai_builder ARGS`` takes the builder's own arguments. The only
place that bridges the two versions: the builder (``onnxruntime_genai/models/builders/base.py`` in
0.18) imports, at module level, two classes that only transformers 5 has, and uses them only as
values of its architecture table for Qwen3.5 models. A placeholder class under each name lets the
module import; Qwen3-VL never reaches them. Under transformers 5 the names exist and nothing is
added. ``tests/integration/test_genai.py`` checks, under 4.57.6, that these are exactly the names missing, so
the bridge goes when transformers or the builder changes.
"""

from __future__ import annotations

import runpy

BUILDER_MODULE = "onnxruntime_genai.models.builder"
# The names the builder imports that transformers 4.57.6 lacks (5.x has them).
MISSING_NAMES: tuple[str, ...] = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")


def add_placeholders() -> list[str]:
    """Put a placeholder class on ``transformers`` for each missing name; return the names added."""
    import transformers

    added = []
    for name in MISSING_NAMES:
        if not hasattr(transformers, name):
            setattr(transformers, name, type(name, (), {"__doc__": "placeholder: a transformers 5 class"}))
            added.append(name)
    return added


if __name__ == "__main__":
    add_placeholders()
    runpy.run_module(BUILDER_MODULE, run_name="__main__", alter_sys=True)
