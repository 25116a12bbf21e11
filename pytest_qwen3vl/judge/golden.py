"""Golden's answers per grid: the outputs a file is judged against and the module activations drift
is located with, computed once per process and grid; with ``weights``, golden's function of a file's
own weights (its parameters swapped in place for each forward and restored: never a second model).

torch and numpy are imported inside the functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec

# The module outputs drift is located at, besides ``pos_add`` (the input of the first block).
_PROBED = re.compile(r"patch_embed|merger|(blocks|deepstack_merger_list|merger_list)\.\d+")


class GoldenRuns:
    """The golden model's outputs and module activations per grid, on the seeded inputs of ``spec``."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, seed: int,
                 weights: Mapping[str, np.ndarray] | None = None) -> None:
        self.model = model
        self.spec = spec
        self.seed = seed
        self.weights = dict(weights or {})  # parameter name -> the value it holds here, PyTorch's layout
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
            with self._held(), torch.inference_mode():
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
            with self._held(), torch.inference_mode():
                self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
        finally:
            for handle in handles:
                handle.remove()
        return got

    @contextmanager
    def _held(self) -> Iterator[None]:
        """The model's parameters and buffers holding ``weights`` (their data swapped in place),
        restored after."""
        import numpy as np
        import torch

        saved: list[tuple[dict[str, torch.Tensor | None], str, torch.Tensor | None]] = []
        try:
            for key, value in self.weights.items():
                prefix, _, leaf = key.rpartition(".")
                module = self.model.get_submodule(prefix)
                slots = module._parameters if leaf in module._parameters else module._buffers
                if leaf not in slots:
                    continue
                held = slots[leaf]
                assert held is not None
                saved.append((slots, leaf, held.data))
                held.data = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(held.dtype)
            yield
        finally:
            for slots, leaf, data in saved:
                tensor = slots[leaf]
                assert tensor is not None and data is not None
                tensor.data = data

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
