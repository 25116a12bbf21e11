"""The golden and modified vision models that share one set of weights, and the export flag.

The vision class and its config are the family's whose class the imported file defines
(``Qwen3VLVisionModel``, ``Qwen3VLMoeVisionModel``, ``Qwen3OmniMoeVisionEncoder``).

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
from pytest_qwen3vl.source.families import QWEN3_VL, Family, family_of_module

if TYPE_CHECKING:
    import torch


@dataclass
class VisionPair:
    """Golden and modified vision models that share their weights, and what could not be shared."""

    golden: torch.nn.Module
    modified: torch.nn.Module
    unshared: list[str]


def vision_config(spec: ModelSpec, family: Family = QWEN3_VL) -> Any:
    """A fresh vision config of ``family`` (``Qwen3VLVisionConfig``, ``Qwen3VLMoeVisionConfig``, ...) for
    the spec; each model gets its own copy. The family's tower takes the same fields."""
    import importlib

    config_class = getattr(importlib.import_module(family.config_module), family.vision_config)
    return config_class(**copy.deepcopy(spec.vision))


def vision_class(module: ModuleType) -> tuple[type[torch.nn.Module], Family]:
    """The vision model class of an imported modeling file, and its family."""
    family = family_of_module(module)
    return getattr(module, family.vision_class), family


def build_golden(module: ModuleType, spec: ModelSpec, seed: int) -> torch.nn.Module:
    """Golden vision model, eval mode, float32, CPU: a checkpoint's weights, or random ones from ``seed``."""
    import torch

    model_class, family = vision_class(module)
    if spec.checkpoint is not None:
        with no_init_weights():
            model = model_class(vision_config(spec, family))
        load_vision_weights(model, spec.checkpoint)
        return model.float().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class._from_config(vision_config(spec, family), dtype=torch.float32)
    return model.eval()


def build_pair(golden_module: ModuleType, modified_module: ModuleType, spec: ModelSpec, seed: int) -> VisionPair:
    """Both vision models; modified takes golden's parameters and persistent buffers as they are."""
    return pair_with(build_golden(golden_module, spec, seed), modified_module, spec)


def pair_with(golden: torch.nn.Module, modified_module: ModuleType, spec: ModelSpec) -> VisionPair:
    """The modified file's vision model next to an already built golden one, sharing its weights: the
    golden model exists (and golden's claims run) whether or not the modified file can be built."""
    model_class, family = vision_class(modified_module)
    with no_init_weights():
        modified = model_class(vision_config(spec, family))
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
