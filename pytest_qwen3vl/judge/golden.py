"""Golden's answers per grid: the outputs a file is judged against and the module activations drift
is located with, computed once per process and grid; with ``weights``, golden's function of a file's
own weights: its parameters overwritten in place with them and restored from a copy on disk, so the
process never holds a second model's worth of tensors (at 4B: 1.6 GB).

torch and numpy are imported inside the functions.
"""

from __future__ import annotations

import re
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_qwen3vl.model.grids import Grid

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pytest_qwen3vl.model.configs import ModelSpec

# The module outputs drift is located at, besides ``pos_add`` (the input of the first block).
_PROBED = re.compile(r"patch_embed|merger|(blocks|deepstack_merger_list|merger_list)\.\d+")
# Which GoldenRuns' weights a model holds now: another's forward then would be silently wrong.
_HOLDING: weakref.WeakKeyDictionary[torch.nn.Module, GoldenRuns] = weakref.WeakKeyDictionary()


class GoldenRuns:
    """The golden model's outputs and module activations per grid, on the seeded inputs of ``spec``."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, seed: int,
                 weights: Mapping[str, np.ndarray] | None = None,
                 saved: Mapping[str, np.ndarray] | None = None) -> None:
        self.model = model
        self.spec = spec
        self.seed = seed
        # parameter or buffer name -> the value it holds here, PyTorch's layout (read when swapped in)
        self.weights: Mapping[str, np.ndarray] = weights or {}
        # golden's own tensors already on disk (read one at a time): restored from there, not saved again
        self.saved: Mapping[str, np.ndarray] = saved or {}
        self._originals: tempfile.TemporaryDirectory[str] | None = None  # the rest of what ``weights`` overwrite
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
            with self.held(), torch.inference_mode():
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
            with self.held(), torch.inference_mode():
                self.model(torch.from_numpy(pixels), torch.from_numpy(thw))
        finally:
            for handle in handles:
                handle.remove()
        return got

    @contextmanager
    def held(self) -> Iterator[None]:
        """The model holding ``weights`` inside (every forward there, one swap: at 4B a swap moves
        1.6 GB each way), restored after from ``saved``, or from a copy saved to disk the first time;
        each tensor is overwritten in place, one at a time. Raises ``RuntimeError`` where the model holds another
        ``GoldenRuns``' weights (its forward there would be silently wrong)."""
        import numpy as np
        import torch

        holder = _HOLDING.get(self.model)
        if holder is self:
            yield
            return
        if holder is not None:
            raise RuntimeError("golden's model holds another file's weights: finish that first")
        if not self.weights:
            yield
            return
        if self._originals is None:
            self._originals = tempfile.TemporaryDirectory(prefix="qwen3vl-golden-")
        folder = Path(self._originals.name)
        swapped: list[tuple[str, torch.Tensor, Path | None]] = []
        _HOLDING[self.model] = self
        try:
            with torch.no_grad():
                for index, (key, tensor) in enumerate(self._slots()):
                    original = None if key in self.saved else folder / f"{index}.pt"
                    if original is not None and not original.is_file():
                        torch.save(tensor.detach(), original)
                    value = torch.from_numpy(np.ascontiguousarray(self.weights[key], dtype=np.float32))
                    swapped.append((key, tensor, original))
                    tensor.copy_(value.reshape(tensor.shape))
            yield
        finally:
            with torch.no_grad():
                for key, tensor, original in swapped:
                    own = torch.load(original, weights_only=True) if original else torch.from_numpy(self.saved[key])
                    tensor.copy_(own.reshape(tensor.shape))
            del _HOLDING[self.model]

    def _slots(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Each key of ``weights`` the model has (a parameter or buffer), with its tensor."""
        for key in self.weights:
            prefix, _, leaf = key.rpartition(".")
            module = self.model.get_submodule(prefix)
            tensor = module._parameters.get(leaf, module._buffers.get(leaf))
            if tensor is not None:
                yield key, tensor

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
