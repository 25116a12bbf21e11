"""Golden's answers per grid: the outputs a file is judged against and the module activations drift
is located with, computed once per process and grid.

torch and numpy are imported inside the functions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec

# The module outputs drift is located at, besides ``pos_add`` (the input of the first block).
_PROBED = re.compile(r"patch_embed|merger|(blocks|deepstack_merger_list)\.\d+")


class GoldenRuns:
    """The golden model's outputs and module activations per grid, on the seeded inputs of ``spec``."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, seed: int) -> None:
        self.model = model
        self.spec = spec
        self.seed = seed
        self.deepstack_layers = tuple(int(i) for i in spec.vision["deepstack_visual_indexes"])
        self._outputs: dict[Grid, tuple[np.ndarray, ...]] = {}

    def inputs(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        from pytest_qwen3vl.model.inputs import make_inputs

        x = make_inputs(grid, self.spec, self.seed)
        return x.pixel_values.numpy(), x.grid_thw.numpy()

    def outputs(self, grid: Grid) -> tuple[np.ndarray, ...]:
        """``(pooled, deepstack_0, deepstack_1, ...)`` as numpy arrays."""
        if grid not in self._outputs:
            import torch

            from pytest_qwen3vl.model.outputs import deepstack, merged

            pixels, thw = self.inputs(grid)
            with torch.inference_mode():
                outputs = self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
            self._outputs[grid] = (merged(outputs).numpy(), *(d.numpy() for d in deepstack(outputs)))
        return self._outputs[grid]

    def probes(self, grid: Grid) -> dict[str, np.ndarray]:
        """Module outputs by probe name (``patch_embed``, ``pos_add``, ``blocks.i``, ...), via hooks."""
        import torch

        got: dict[str, np.ndarray] = {}
        handles = [self.model.blocks[0].register_forward_pre_hook(
            lambda _m, args: got.__setitem__("pos_add", args[0].numpy().copy()))]
        for name, module in self.model.named_modules():
            if _PROBED.fullmatch(name):
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, key=name: got.__setitem__(key, out.numpy().copy())))
        pixels, thw = self.inputs(grid)
        try:
            with torch.inference_mode():
                self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
        finally:
            for handle in handles:
                handle.remove()
        return got

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
