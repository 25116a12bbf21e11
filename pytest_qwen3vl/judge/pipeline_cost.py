"""What a file's features cost in the whole model: the language model run on one prompt with golden's
vision outputs and with the file's, compared as the ``pipeline-*`` claims compare (``model/pipeline.py``):
top-1 agreement and KL of the next-token logits at the prompt's last positions.

The cost is shown beside ``artefact-parity``'s verdict, never instead of it: the verdict is the
format's tolerance on the vision outputs; the cost says what that distance does to the next token.
Both runs go through ``language_run``, so features equal to golden's cost exactly nothing, and only
the features differ between them. A DeepStack feature the file does not output is golden's in both
runs (what the file's outputs cost, not what dropping DeepStack costs: ``pipeline-like-golden`` says that).

torch is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError, NotRunnable
from pytest_qwen3vl.model.grids import DEFAULT_GRID, Grid

if TYPE_CHECKING:
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.model.pipeline import PipelineGap, PipelineRun
    from pytest_qwen3vl.store.cache import ArtifactCache


def cost_grid(grids: Sequence[Grid]) -> Grid:
    """The one grid the cost is measured on: the default grid where the run has it, else its first."""
    return DEFAULT_GRID if DEFAULT_GRID in grids else grids[0]


@dataclass(frozen=True)
class PipelineCost:
    """The gap of the file's run from golden's on ``grid``, or why there is none."""

    grid: Grid
    gap: PipelineGap | None = None
    absent: str | None = None
    golden_deepstack: int = 0  # DeepStack features golden's in both runs: the file does not output them
    language: str = ""  # whose language model ran

    def to_dict(self) -> dict[str, Any]:
        gap = None if self.gap is None else dataclasses.asdict(self.gap)
        return {"grid": self.grid.text, "gap": gap, "absent": self.absent, "golden_deepstack": self.golden_deepstack,
                "language": self.language}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineCost:
        from pytest_qwen3vl.model.pipeline import PipelineGap

        gap = None if data["gap"] is None else PipelineGap(**data["gap"])
        return cls(Grid.parse(data["grid"]), gap, data["absent"], data["golden_deepstack"], data["language"])

    def text(self) -> str:
        if self.gap is None:
            return f"in the pipeline: not measured ({self.absent})"
        from pytest_qwen3vl.model.pipeline import LAST

        note = (f"; {self.golden_deepstack} DeepStack feature{'s' if self.golden_deepstack != 1 else ''} golden's "
                "(the file does not output them)" if self.golden_deepstack else "")
        return (f"in the pipeline on {self.grid.id}: top-1 agreement {self.gap.top1_last:.0%}, "
                f"KL {self.gap.kl_last:.2g} nats at the last {LAST} positions, logits relative L2 "
                f"{self.gap.logits:.2g}, {self.language}{note}")


class WholeModel:
    """Golden's whole model around the session's golden vision tower (``build_full_model``), made on
    first use only where its language model fits (``check_fits``), and golden's run per grid, kept."""

    def __init__(self, module: ModuleType, golden: GoldenRuns, store: ArtifactCache | None = None) -> None:
        self.module = module
        self.golden = golden
        self.store = store  # where measured costs are kept across processes and runs (None: not kept)
        self._model: Any = None
        self._absent: str | None = None
        self._runs: dict[Grid, tuple[Any, PipelineRun]] = {}

    def refusal(self) -> str | None:
        """Why no language model is at hand or fits (``check_fits``, decided once, nothing built), or None."""
        from pytest_qwen3vl.model.pipeline import check_fits

        if self._model is None and self._absent is None:
            try:
                check_fits(self.module, self.golden.spec)
            except ConfigError as exc:
                self._absent = str(exc)
        return self._absent

    def model(self) -> Any:
        """The whole model; raises ``ConfigError`` (kept) when no language model is at hand or fits."""
        from pytest_qwen3vl.model.pipeline import build_full_model

        if self.refusal() is not None:
            raise ConfigError(self._absent)
        if self._model is None:
            self._model = build_full_model(self.module, self.golden.spec, self.golden.model, self.golden.seed)
        return self._model

    def kept(self, parts: Mapping[str, str], grid: Grid, measure: Callable[[], PipelineCost]) -> PipelineCost:
        """``measure()``, kept in ``store`` under ``parts`` (what the file's outputs on ``grid`` are made
        of) and what the whole model is made of (the golden file, config, seed, the measuring code), so
        another worker or a later run reads it instead of building the language model. A cost not
        measured (no language model, a refused grid) is not kept: it is said again, never remembered. A
        cache that takes nothing (``NotRunnable``) costs only the keeping, never the parity row."""
        from pytest_qwen3vl.store.cache import MEASURING, Unpublished, code_digest, file_digest
        from pytest_qwen3vl.versions import library_versions

        if self.store is None:
            return measure()
        key = {
            "kind": "pipeline-cost", **parts, "grid": grid.text, "config": self.golden.spec.key(),
            "seed": str(self.golden.seed), "golden": file_digest(Path(str(self.module.__file__))),
            "libraries": json.dumps(library_versions(), sort_keys=True),
            "code": code_digest(*MEASURING),
        }

        def build(out: Path) -> None:
            cost = measure()
            if cost.gap is None:
                raise Unpublished(cost)
            out.write_text(json.dumps(cost.to_dict()), encoding="utf-8")

        try:
            return PipelineCost.from_dict(json.loads(self.store.get_or_create(key, "cost.json", build).read_text()))
        except Unpublished as absent:
            cost: PipelineCost = absent.value
            return cost
        except NotRunnable:  # the cache cannot keep it: measured here, and the verdict beside it still stands
            return measure()

    def _golden_run(self, grid: Grid) -> tuple[Any, PipelineRun]:
        """The prompt for ``grid`` and the language model fed golden's vision outputs."""
        import torch

        from pytest_qwen3vl.model import pipeline as pl

        if grid not in self._runs:
            model = self.model()
            _, thw = self.golden.inputs(grid)
            grid_thw = torch.from_numpy(thw)
            ids = pl.make_prompt(pl.image_counts(grid_thw, model.config.vision_config.spatial_merge_size),
                                 model.config, self.golden.seed)
            pooled, *deepstack = self.golden.outputs(grid)
            self._runs[grid] = ids, pl.language_run(model, ids, grid_thw, pooled, deepstack or None)
        return self._runs[grid]

    def cost(self, grid: Grid, pooled: Any, deepstack: Sequence[Any]) -> PipelineCost:
        """The file's pooled output and DeepStack features (in order; golden's for those it lacks) fed to
        the language model, against golden's."""
        import torch

        from pytest_qwen3vl.model import pipeline as pl

        try:
            ids, golden = self._golden_run(grid)
        except ConfigError as exc:
            return PipelineCost(grid, absent=f"no language model: {exc}")
        model = self.model()
        gold = self.golden.outputs(grid)
        features = [*deepstack, *gold[1 + len(deepstack):]]
        run = pl.language_run(model, ids, torch.from_numpy(self.golden.inputs(grid)[1]), pooled, features or None)
        gap = pl.pipeline_gap(run, golden, ids, model.config.image_token_id)
        checkpoint = self.golden.spec.checkpoint
        language = ("a seeded random language model (the mechanism, not a real model's accuracy)" if checkpoint is None
                    else f"the language model of {checkpoint.name}")
        return PipelineCost(grid, gap, golden_deepstack=len(gold) - 1 - len(deepstack), language=language)
