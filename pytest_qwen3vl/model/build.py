"""The golden and modified vision models that share one set of weights, and the export flag.

``build_pair``: golden gets seeded random weights (or a checkpoint's), modified is built without
initialisation and then takes golden's parameters and persistent buffers (the very same tensor
objects). Non-persistent buffers (``rotary_pos_emb.inv_freq``, and on 5.x also ``original_inv_freq``)
are computed by each file itself, so a modified file that changes them is caught by comparing buffers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_qwen3vl.model.api import no_init_weights
from pytest_qwen3vl.model.checkpoint import load_vision_weights
from pytest_qwen3vl.model.configs import ModelSpec

if TYPE_CHECKING:
    import torch


@dataclass
class VisionPair:
    """Golden and modified vision models that share their weights, and what could not be shared."""

    golden: torch.nn.Module
    modified: torch.nn.Module
    unshared: list[str]


def vision_config(spec: ModelSpec) -> Any:
    """A fresh ``Qwen3VLVisionConfig`` for the spec; each model gets its own copy."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig

    return Qwen3VLVisionConfig(**copy.deepcopy(spec.vision))


def build_golden(module: ModuleType, spec: ModelSpec, seed: int) -> torch.nn.Module:
    """Golden vision model, eval mode, float32, CPU: a checkpoint's weights, or random ones from ``seed``."""
    import torch

    if spec.checkpoint is not None:
        with no_init_weights():
            model = module.Qwen3VLVisionModel(vision_config(spec))
        load_vision_weights(model, spec.checkpoint)
        return model.float().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module.Qwen3VLVisionModel._from_config(vision_config(spec), dtype=torch.float32)
    return model.eval()


def build_pair(golden_module: ModuleType, modified_module: ModuleType, spec: ModelSpec, seed: int) -> VisionPair:
    """Both vision models; modified takes golden's parameters and persistent buffers as they are."""
    return pair_with(build_golden(golden_module, spec, seed), modified_module, spec)


def pair_with(golden: torch.nn.Module, modified_module: ModuleType, spec: ModelSpec) -> VisionPair:
    """The modified file's vision model next to an already built golden one, sharing its weights: the
    golden model exists (and golden's claims run) whether or not the modified file can be built."""
    with no_init_weights():
        modified = modified_module.Qwen3VLVisionModel(vision_config(spec))
    unshared = share_weights(golden, modified)
    return VisionPair(golden, modified.float().eval(), unshared)


def share_weights(source: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Point every parameter and persistent buffer of ``target`` at ``source``'s tensor.

    Returns the state-dict keys that exist on one side only or differ in shape; those keep
    whatever the target had, and the runtime-equivalence claim reports them.
    """
    source_state = source.state_dict(keep_vars=True)
    target_state = target.state_dict(keep_vars=True)
    unshared = sorted(set(source_state) ^ set(target_state))
    for key, tensor in source_state.items():
        if key not in target_state:
            continue
        if target_state[key].shape != tensor.shape:
            unshared.append(key)
            continue
        owner_name, _, leaf = key.rpartition(".")
        owner = target.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = tensor
        else:
            owner._buffers[leaf] = tensor
    return sorted(unshared)


@contextlib.contextmanager
def deepstack_export_flag(model: torch.nn.Module, value: bool | None) -> Iterator[None]:
    """Set (True/False) or remove (None) ``_skip_deepstack_export`` for a block, then restore it."""
    missing = object()
    old = model.__dict__.get("_skip_deepstack_export", missing)
    if value is None:
        model.__dict__.pop("_skip_deepstack_export", None)
    else:
        model._skip_deepstack_export = value
    try:
        yield
    finally:
        if old is missing:
            model.__dict__.pop("_skip_deepstack_export", None)
        else:
            model._skip_deepstack_export = old
