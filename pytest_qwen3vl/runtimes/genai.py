"""onnxruntime-genai as a runtime: a vision file inside a genai model folder's multimodal pipeline.

``OnnxRuntimeGenai(folder).load(path)`` is genai's model on the folder with ``path`` as its vision file
(a config overlay; the folder's own vision file is taken as its config names it). The session runs what
the judge asks of any runtime, the vision output for ``pixel_values`` and ``image_grid_thw`` feeds, as
genai exposes it: genai 0.18 takes its processor's outputs as named tensors, so any grid is fed (several
images, T > 1, grids its processor never emits), with a prompt of one image-pad run per image, and the
image features are read as the generator's ``inputs_embeds`` rows at the image pads
(``image_features`` is not an output it gives). No other output of the file is exposed: DeepStack
outputs are not compared on this runtime, and the session's ``note`` says so.

For the "In the runtime" claims the session also runs an image prompt through genai's own processor
(``preprocess``) and generates from it (``generate``): the logits of each step with ``get_logits()``
before ``generate_next_token()``. A node of the vision file that stops is ``RuntimeRefused`` naming it;
any other genai error is ours or the folder's and propagates as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import NotRunnable, RuntimeRefused
from pytest_qwen3vl.runtimes.base import Runtime, Session
from pytest_qwen3vl.runtimes.genai_folder import CONFIG_FILE, PROCESSOR_FILE, misfit, vision_overlay

if TYPE_CHECKING:
    import numpy as np

GENAI_RUNTIME = "onnxruntime-genai"
# The named tensors genai's Qwen3-VL pipeline takes from its processor (genai 0.18).
IMAGE_TOKENS = "num_image_tokens"


@dataclass
class GenaiRun:
    """One prompt through genai: what its processor made, the image features, each step's logits."""

    input_ids: np.ndarray  # (seq,) int64
    pixel_values: np.ndarray  # (patches, 1536)
    grid: np.ndarray  # (images, 3)
    features: np.ndarray  # (image tokens, hidden): inputs_embeds at the image pads
    logits: np.ndarray  # (steps, vocab)
    tokens: list[int]


@dataclass(frozen=True)
class FolderFacts:
    """What a genai folder's configs say about the vision file it can take and the prompt it reads."""

    image_token: int
    vision_start: int
    merge: int
    hidden: int
    columns: int | None  # pixel values per patch, from the processor's PatchImage
    vision_file: str
    vision_output: str

    @classmethod
    def of(cls, folder: Path) -> FolderFacts:
        model = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["model"]
        columns = None
        processor = folder / model["vision"].get("config_filename", PROCESSOR_FILE)
        if processor.is_file():
            for step in json.loads(processor.read_text(encoding="utf-8"))["processor"]["transforms"]:
                attrs = step["operation"].get("attrs", {})
                if step["operation"]["type"] == "PatchImage":
                    columns = 3 * int(attrs["temporal_patch_size"]) * int(attrs["patch_size"]) ** 2
        return cls(int(model["image_token_id"]), int(model["vision_start_token_id"]),
                   int(model["vision"].get("spatial_merge_size", 2)), int(model["decoder"]["hidden_size"]), columns,
                   str(model["vision"]["filename"]), str(model["vision"]["outputs"]["image_features"]))


def genai_failure(exc: BaseException, nodes: Collection[str], what: str) -> RuntimeRefused | None:
    """genai's error as a refusal when a node of the vision file (``nodes``) stopped, else None (ours)."""
    from pytest_qwen3vl.runtimes.onnxruntime import failed_node, runtime_failure

    node = failed_node(exc)
    if node is None or not node[1] or node[1] not in nodes:
        return None
    return RuntimeRefused(f"{GENAI_RUNTIME}: {what}{runtime_failure(exc)}", node)


class GenaiSession(Session):
    """genai's model with one vision file; ``pooled`` is the file's output genai reads as image features."""

    def __init__(self, model: Any, facts: FolderFacts, pooled: str, inputs: tuple[str, str],
                 nodes: frozenset[str], others: bool) -> None:
        self.model = model
        self.facts = facts
        self.pooled = pooled
        self.inputs = inputs
        self.nodes = nodes
        self.note = "image features only: genai exposes no other output" if others else ""

    @contextmanager
    def refusals(self) -> Iterator[None]:
        """genai's error at a node of the vision file as ``RuntimeRefused``."""
        try:
            yield
        except RuntimeError as exc:
            refusal = genai_failure(exc, self.nodes, "the vision file stops at ")
            if refusal is None:
                raise
            raise refusal from exc

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The image features for the fed pixels and grid (the file's own input names), under the file's
        pooled output's name. The prompt is, per image, the vision-start token and as many image pads as the
        image has merged patches."""
        import numpy as np
        import onnxruntime_genai as og

        pixels, grid = self.inputs
        thw = np.asarray(feeds[grid])
        facts = self.facts
        counts = [int(np.prod(row)) // facts.merge**2 for row in thw.tolist()]
        ids = np.array([[token for n in counts for token in (facts.vision_start, *[facts.image_token] * n)]],
                       dtype=np.int32)
        named = og.NamedTensors()
        named["input_ids"] = ids
        named["pixel_values"] = np.ascontiguousarray(feeds[pixels])
        named["image_grid_thw"] = np.ascontiguousarray(thw)
        named[IMAGE_TOKENS] = np.array(counts, dtype=np.int64)
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=int(ids.shape[1]) + 1, do_sample=False)
        generator = og.Generator(self.model, params)
        with self.refusals():
            generator.set_inputs(named)
        embeds = generator.get_output("inputs_embeds")[0]
        return {self.pooled: embeds[ids[0] == facts.image_token].copy()}

    def preprocess(self, image: Path, prompt: str) -> dict[str, np.ndarray]:
        """genai's processor on the prompt and image: its named outputs as numpy arrays."""
        import onnxruntime_genai as og

        inputs = self.model.create_multimodal_processor()(prompt, images=og.Images.open(str(image)))
        return {name: inputs[name].as_numpy() for name in inputs.keys()}  # noqa: SIM118 - NamedTensors

    def generate(self, image: Path, prompt: str, steps: int) -> GenaiRun:
        """Greedy generation of ``steps`` tokens from genai's own processing of the prompt and image."""
        import numpy as np
        import onnxruntime_genai as og

        inputs = self.model.create_multimodal_processor()(prompt, images=og.Images.open(str(image)))
        named = {name: inputs[name].as_numpy() for name in inputs.keys()}  # noqa: SIM118 - NamedTensors
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=int(named["input_ids"].shape[-1]) + steps, do_sample=False)
        generator = og.Generator(self.model, params)
        with self.refusals():
            generator.set_inputs(inputs)
        embeds = generator.get_output("inputs_embeds")[0].copy()
        logits, tokens = [], []
        for _ in range(steps):
            logits.append(generator.get_logits()[0, -1].copy())
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        ids = named["input_ids"][0].astype("int64")
        return GenaiRun(ids, named["pixel_values"], named["image_grid_thw"], embeds[ids == self.facts.image_token],
                        np.stack(logits), tokens)


class OnnxRuntimeGenai(Runtime):
    """genai 0.18 on the CPU at fp32 (the folder's decoder and embedding are fp32); ``folder`` gives the
    genai folder when a file is first loaded (making it can take minutes; ``NotRunnable`` when it cannot
    be made here)."""

    name = GENAI_RUNTIME
    precision = "fp32"

    def __init__(self, folder: Callable[[], Path]) -> None:
        self._folder = folder
        self._key: str | None = None

    def folder(self) -> Path:
        return self._folder()

    def key(self) -> str:
        """The label and what the folder computes the image features with besides the file: its config and
        embedding model, by content (never by place: a cache moved elsewhere still serves), hashed once."""
        if self._key is None:
            from pytest_qwen3vl.store.cache import file_digest

            folder = self.folder()
            embedding = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["model"]["embedding"]["filename"]
            self._key = json.dumps([self.label, file_digest(folder / CONFIG_FILE), file_digest(folder / embedding)])
        return self._key

    def load(self, path: Path) -> GenaiSession:
        """``NotRunnable`` for a file genai's folder cannot take as it is (another config's widths, no pooled
        output or grid input recognised by name): not a verdict on the file."""
        import onnxruntime_genai as og

        from pytest_qwen3vl.onnxfile.interface import recognise
        from pytest_qwen3vl.onnxfile.structure import structure

        folder = self.folder().resolve()
        facts = FolderFacts.of(folder)
        graph = structure(path)  # read once: the interface and the node names a refusal may name
        interface = recognise(graph, path)
        own = path.resolve() == (folder / facts.vision_file).resolve()
        pooled = facts.vision_output if own else interface.pooled.name if interface.pooled else None
        if pooled is None or interface.grid is None:
            missing = "a pooled output" if pooled is None else "a grid input"
            raise NotRunnable(f"not run: {GENAI_RUNTIME} feeds the pixels and the grid and reads the image features; "
                              f"{path.name} has no {missing} recognised by name ({interface.describe()})")
        if wrong := misfit(interface, facts.columns, facts.hidden):
            _, found, what, expected = wrong
            raise NotRunnable(f"not run: {path.name} has {found} {what}, the session's genai folder {expected}: "
                              f"a file of another config than the folder's")
        config = og.Config(str(folder))
        if not own:
            config.overlay(vision_overlay(folder, path, pooled, (interface.pixels.name, interface.grid.name)))
        nodes = frozenset(node.name for node in graph.graph.node)
        try:
            model = og.Model(config)
        except RuntimeError as exc:
            raise RuntimeRefused(f"{GENAI_RUNTIME}: does not load {path.name}: {' '.join(str(exc).split())}") from exc
        others = len(interface.outputs) > 1
        return GenaiSession(model, facts, pooled, (interface.pixels.name, interface.grid.name), nodes, others)
