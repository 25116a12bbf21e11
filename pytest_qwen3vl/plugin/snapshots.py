"""Syrupy snapshots of ONNX graph signatures: one pretty JSON file per case, kept apart by what they
depend on.

- ``SignatureSnapshot`` holds the contract (opset, input and output names, element types, dims):
  what a downstream runtime relies on, the same with any torch or onnx version. It lives in
  ``<root>/<test module>/<test>[<case>-<config>-<grid>].json``.
- ``LoweringSnapshot`` holds how the exporter lowered the model (operator histogram, initializers
  by module): it changes with torch, onnx and transformers, so it lives one folder down, in
  ``<root>/<test module>/torch-<version>_onnx-<version>_transformers-<version>/``, and a run on
  other versions skips it.

``<root>`` is ``--qwen3vl-snapshot-dir`` (ini ``qwen3vl_snapshot_dir``), by default the suite's
``snapshots/`` folder (inside the package in a wheel). Each value sits on a line of its own that
names it (``"pooled_embeds: float32 [num_merged_patches, 2560]"``, ``"Mul": 70``), so syrupy's
line diff of a mismatch says which part of the signature changed.

Snapshots are keyed by run parameters (config, grid, versions) that one run sees only some of, so
syrupy's unused-snapshot detection is turned off for these extensions: ``--snapshot-update`` (with
or without ``-n``) writes the cases it ran and deletes nothing. Remove a stale file by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syrupy.data import SnapshotCollections
from syrupy.extensions.json import JSONSnapshotExtension

from pytest_qwen3vl.onnxfile.signature import CONSTANTS_BUCKET
from pytest_qwen3vl.plugin.settings import SNAPSHOT_DIR, flag, settings_of
from pytest_qwen3vl.versions import ABSENT, library_versions

if TYPE_CHECKING:
    import pytest
    from syrupy.assertion import SnapshotAssertion
    from syrupy.location import PyTestLocation

    from pytest_qwen3vl.model.configs import ModelSpec
    from pytest_qwen3vl.model.grids import Grid

VERSIONED_LIBRARIES = ("torch", "onnx", "transformers")


def snapshot_root(config: pytest.Config) -> Path:
    """``--qwen3vl-snapshot-dir`` (command line over ini), else the suite's ``snapshots/``."""
    return settings_of(config).snapshot_dir


def config_label(spec: ModelSpec) -> str:
    """A preset's name, or ``config-<hash>`` for a config file or checkpoint (its path is no name)."""
    from pytest_qwen3vl.model.configs import VISION_PRESETS

    if spec.name in VISION_PRESETS:
        return spec.name
    return f"config-{hashlib.sha256(spec.key().encode('utf-8')).hexdigest()[:8]}"


def versions_label() -> str:
    """``torch-2.13.0_onnx-1.23.0_transformers-4.57.6``: public versions, so a CPU and a CUDA build share snapshots."""
    from packaging.version import Version

    parts = []
    for name, version in library_versions(VERSIONED_LIBRARIES).items():
        parts.append(f"{name}-{Version(version).public if version != ABSENT else version}")
    return "_".join(parts)


def case_label(item: pytest.Item) -> str:
    """The test's own parameter ids, the family where it is not Qwen3-VL's (its graphs name other modules),
    then the config, then the grid: ``modified-pooled-tiny-1x24x24``, ``golden-all-qwen3_omni_moe-tiny-1x24x24``."""
    from pytest_qwen3vl.source.files import file_family

    callspec = getattr(item, "callspec", None)
    grid: Grid | None = callspec.params.get("qwen3vl_grid") if callspec else None
    ids = callspec.id.split("-") if callspec else []
    parts = [part for part in ids if grid is None or part != grid.id]
    settings = settings_of(item.config)
    family = file_family(settings.golden) if settings.golden is not None else None
    if family is not None and family.name != "qwen3_vl":
        parts.append(family.name)
    parts.append(config_label(settings.model))
    if grid is not None:
        parts.append(grid.id)
    return "-".join(parts)


class SignatureSnapshot(JSONSnapshotExtension):
    """The version-free contract of an export, one JSON file per test case."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(snapshot_root(test_location.item.config) / test_location.basename)

    @classmethod
    def get_snapshot_name(cls, *, test_location: PyTestLocation, index: Any = 0) -> str:
        test = test_location.methodname
        if test_location.classname:
            test = f"{test_location.classname}.{test}"
        name = f"{test}[{case_label(test_location.item)}]"
        if isinstance(index, str):  # snapshot(name=...), as syrupy names it
            return f"{name}[{index}]"
        return f"{name}.{index}" if index else name

    @classmethod
    def matches_test_location(cls, *, test_location: PyTestLocation, snapshot_location: str) -> bool:
        return Path(snapshot_location).parent == Path(cls.dirname(test_location=test_location))

    def discover_snapshots(
        self, *, test_location: PyTestLocation, ignore_extensions: list[str] | None = None
    ) -> SnapshotCollections:
        """Nothing: a run sees only some configs, grids and versions, so syrupy must never judge the
        other files unused (it would fail the run, or delete them with ``--snapshot-update``)."""
        return SnapshotCollections()


class LoweringSnapshot(SignatureSnapshot):
    """How the exporter lowered the model: kept per torch and onnx version."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(Path(super().dirname(test_location=test_location)) / versions_label())


def contract_document(signature: dict[str, Any]) -> dict[str, Any]:
    """The contract of ``graph_signature``, one line per input and output, in their order."""
    contract = signature["contract"]
    return {
        "opset": contract["opset"],
        "inputs": [_tensor_line(value) for value in contract["inputs"]],
        "outputs": [_tensor_line(value) for value in contract["outputs"]],
    }


def lowering_document(signature: dict[str, Any]) -> dict[str, Any]:
    """Node count, operator histogram and initializers by module, one line each."""
    return {
        "nodes": sum(signature["operators"].values()),
        "operators": signature["operators"],
        "initializers": {
            owner: leaves if owner == CONSTANTS_BUCKET else ", ".join(leaves)
            for owner, leaves in signature["initializers"].items()
        },
    }


def _tensor_line(value: dict[str, Any]) -> str:
    dims = "?" if value["dims"] is None else f"[{', '.join('?' if d is None else str(d) for d in value['dims'])}]"
    return f"{value['name']}: {value['elem_type']} {dims}"


def snapshot_for(snapshot: SnapshotAssertion, extension: type[SignatureSnapshot]) -> SnapshotAssertion:
    """``snapshot`` with ``extension``; skips the test when its file is missing and not being written.

    A case this repo ships no snapshot for (another config, grid or library version) is not a
    conformance failure: the claims' own tests still decide it.
    """
    import pytest

    assertion = snapshot.use_extension(extension)
    location = Path(extension.get_location(test_location=assertion.test_location, index=0))
    if not assertion.update_snapshots and not location.is_file():
        if issubclass(extension, LoweringSnapshot):
            shipped = sorted(p.name for p in location.parent.parent.glob("torch-*") if p.is_dir())
            pytest.skip(
                f"no lowering snapshot for {versions_label().replace('_', ', ')} "
                f"(snapshots exist for: {', '.join(shipped) or 'none'}); record one with --snapshot-update"
            )
        pytest.skip(f"no snapshot {location.name} in {location.parent}; record one with --snapshot-update "
                    f"(or point {flag(SNAPSHOT_DIR)} at your own folder)")
    return assertion


def describe_mismatch(assertion: SnapshotAssertion) -> str:
    """Which parts of the last compared document differ from its snapshot, one line, for the
    assertion message (the table shows it; syrupy's line diff follows below it)."""
    result = assertion.executions[assertion.num_executions - 1]
    name = Path(result.snapshot_location).name
    if result.recalled_data is None:
        return f"no snapshot {name}"
    changes = document_changes(json.loads(result.recalled_data), json.loads(str(result.asserted_data)))
    return f"{name} differs: {'; '.join(changes)}"


def document_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``<part> <what changed>`` for each top-level part of two documents that differs: entries lost
    (``-``) and gained (``+``) in a list, ``key: old -> new`` in a mapping, else ``old -> new``."""
    changes = []
    for part in sorted(set(before) | set(after)):
        old, new = before.get(part), after.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(set(old) | set(new))
            detail = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k))
        elif isinstance(old, list) and isinstance(new, list):
            moved = [f"- {item}" for item in old if item not in new] + [f"+ {item}" for item in new if item not in old]
            detail = ", ".join(moved) or f"order {old} -> {new}"
        else:
            detail = f"{old} -> {new}"
        changes.append(f"{part} {detail}")
    return changes
