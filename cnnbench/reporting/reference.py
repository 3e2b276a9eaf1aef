"""A run's paper number: its config looked up in the papers' table (``cnnbench.core.reference``).

The model options are resolved the way ``build_model`` builds the net (``cnnbench.models.paper``), so a
config composed from ``conf/`` and a hand-written one with fewer keys find the same entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnnbench.core.reference import citation, dataset_label, family_note, load_reference, match
from cnnbench.models.paper import resolved_options
from cnnbench.models.registry import list_models

__all__ = ["dataset_label", "family_note", "load_reference", "paper_reference"]

# Model-section keys that are not options of the network.
_NOT_OPTIONS = {"name", "default_depth"}


def _name(section: Any) -> str | None:
    """``data``/``augment``/``model`` may be a config section with ``name`` or just the name."""
    if isinstance(section, Mapping):
        section = section.get("name")
    if section is None:
        return None
    if section is False:
        return "none"
    return str(section).lower()


def _depth(config: Mapping[str, Any]) -> Any:
    """The top-level ``depth``; an unresolved ``${model.default_depth}`` (a saved Hydra config read without
    resolving) is resolved."""
    depth = config.get("depth")
    if isinstance(depth, str):
        from omegaconf import OmegaConf

        try:
            depth = OmegaConf.create(dict(config)).depth
        except Exception:  # an interpolation that cannot be resolved here: depth unknown
            return None
    return depth


def _result(entry: Mapping[str, Any], label: str) -> dict[str, Any]:
    cell = entry["errors"][label]
    cell = cell if isinstance(cell, Mapping) else {"error": cell}
    return {
        "method": entry["method"],
        "model": entry["model"],
        "depth": entry.get("depth"),
        "options": dict(entry.get("options") or {}),
        "dataset": label,
        "test_error": float(cell["error"]),  # percent
        "test_error_mean": cell.get("mean"),
        "test_error_std": cell.get("std"),
        "runs": cell.get("runs"),
        "note": cell.get("note"),
        "params_m": None if entry.get("params_misprinted") else entry.get("params_m"),
        "source": entry["source"],
        "citation": citation(entry["source"]),
    }


def paper_reference(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's number for a run's configuration, or None when no paper reports it.

    ``config`` is a composed cnnbench config (``model: {name, <options>, default_depth}``, ``depth``,
    ``data: {name}``, ``augment: {name}``), as Hydra composes it or as read back from a run's
    ``.hydra/config.yaml``; ``model``, ``data`` and ``augment`` may also be plain names. Options the
    model section lacks take the builder's defaults. Without an ``augment`` entry the dataset column
    (C10 vs C10+) is unknown and nothing matches.

    Returns the first matching entry of ``reference.yaml`` as ``{method, dataset, test_error (percent),
    test_error_mean, test_error_std, runs, note, params_m (millions), source, citation, ...}`` with the
    other matching entries (second-hand reports of the same number) under ``also``.
    """
    model_section = config.get("model")
    model = _name(model_section)
    label = dataset_label(_name(config.get("data")), _name(config.get("augment")))
    if model is None or label is None:
        return None
    options = (
        {k: v for k, v in model_section.items() if k not in _NOT_OPTIONS}
        if isinstance(model_section, Mapping)
        else {}
    )
    if model in list_models():
        options = resolved_options(model, options)
    matches = [_result(entry, label) for entry in match(model, _depth(config), options, dataset=label)]
    if not matches:
        return None
    return {**matches[0], "also": matches[1:]}
