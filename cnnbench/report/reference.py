"""Papers' reference numbers (``cnnbench/reference.yaml``) and the lookup that matches a run to them."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

# augment.name values that count as "no augmentation" (a missing augment section is *unknown*, not none).
_NO_AUGMENT = {"none", "off", "false", "no"}


@functools.lru_cache(maxsize=1)
def load_reference() -> dict[str, Any]:
    """The parsed ``cnnbench/reference.yaml`` (shipped as package data)."""
    text = resources.files("cnnbench").joinpath("reference.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def family_note(model: str) -> str | None:
    """Why a family has no paper numbers (e.g. plain nets), if the reference file says."""
    return (load_reference().get("notes") or {}).get(model)


def _name(section: Any) -> str | None:
    """``data``/``augment``/``model`` may be a config section with ``name`` or just the name."""
    if isinstance(section, Mapping):
        section = section.get("name")
    if section is None:
        return None
    if section is False:
        return "none"
    return str(section).lower()


def dataset_label(data: str | None, augment: str | None) -> str | None:
    """The papers' column (C10, C10+, ...) for a dataset and augmentation, or None."""
    if data is None or augment is None:
        return None
    augment = "none" if augment in _NO_AUGMENT else augment
    for label, spec in load_reference()["datasets"].items():
        if spec["data"] == data and spec["augment"] == augment:
            return label
    return None


def _enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "none", "off")
    return bool(value)


def _option_matches(want: Any, have: Any) -> bool:
    # Booleans in the reference mean "feature on/off": a drop rate of 0.5 is "on".
    if isinstance(want, bool):
        return _enabled(have) == want
    if isinstance(want, (int, float)) and not isinstance(have, bool):
        try:
            return math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(want).lower() == str(have).lower()


def _entry_matches(entry: Mapping[str, Any], model: str, depth: Any, options: Mapping[str, Any]) -> bool:
    if entry["model"] != model:
        return False
    if entry.get("depth") is not None and entry["depth"] != depth:
        return False
    defaults = (load_reference().get("families") or {}).get(model) or {}
    wanted = {**defaults, **(entry.get("options") or {})}
    for key, want in wanted.items():
        have = options.get(key, defaults.get(key))
        if have is None and key not in defaults:
            return False  # the entry needs an option this config does not set
        if not _option_matches(want, have):
            return False
    return True


def _result(entry: Mapping[str, Any], label: str) -> dict[str, Any]:
    cell = entry["errors"][label]
    cell = cell if isinstance(cell, Mapping) else {"error": cell}
    source = entry["source"]
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
        "params_m": entry.get("params_m"),
        "source": source,
        "citation": " ".join(load_reference()["sources"][source].split()),
    }


def paper_reference(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's number for a run's configuration, or None when no paper reports it.

    ``config`` is a composed cnnbench config (``model: {name, <options>}``, ``depth``, ``data: {name}``,
    ``augment: {name}``); ``model``, ``data`` and ``augment`` may also be plain names. Without an
    ``augment`` entry the dataset column (C10 vs C10+) is unknown and nothing matches.

    Returns the first matching entry of ``reference.yaml`` as ``{method, dataset, test_error (percent),
    test_error_mean, test_error_std, runs, note, params_m (millions), source, citation, ...}`` with the
    other matching entries (second-hand reports of the same number) under ``also``.
    """
    model_section = config.get("model")
    model = _name(model_section)
    options = (
        {k: v for k, v in model_section.items() if k != "name"} if isinstance(model_section, Mapping) else {}
    )
    label = dataset_label(_name(config.get("data")), _name(config.get("augment")))
    if model is None or label is None:
        return None
    matches = [
        _result(entry, label)
        for entry in load_reference()["entries"]
        if label in entry["errors"] and _entry_matches(entry, model, config.get("depth"), options)
    ]
    if not matches:
        return None
    return {**matches[0], "also": matches[1:]}
