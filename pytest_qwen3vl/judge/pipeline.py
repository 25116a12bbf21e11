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

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.errors import ConfigError
from pytest_qwen3vl.model.grids import DEFAULT_GRID, Grid

if TYPE_CHECKING:
    from pytest_qwen3vl.judge.golden import GoldenRuns
    from pytest_qwen3vl.model.pipeline import PipelineGap, PipelineRun


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

    def __init__(self, module: ModuleType, golden: GoldenRuns) -> None:
        self.module = module
        self.golden = golden
        self._model: Any = None
        self._absent: str | None = None
        self._runs: dict[Grid, tuple[Any, PipelineRun]] = {}

    def model(self) -> Any:
        """The whole model; raises ``ConfigError`` (kept) when no language model is at hand or fits."""
        from pytest_qwen3vl.model.pipeline import build_full_model, check_fits

        if self._absent is not None:
            raise ConfigError(self._absent)
        if self._model is None:
            try:
                check_fits(self.module, self.golden.spec)
                self._model = build_full_model(self.module, self.golden.spec, self.golden.model, self.golden.seed)
            except ConfigError as exc:
                self._absent = str(exc)
                raise
        return self._model

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
