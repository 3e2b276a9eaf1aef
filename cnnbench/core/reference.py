"""The papers' numbers (``cnnbench/core/reference.yaml``): the one reader of that file and its matching rule.

``match(model, depth, options, dataset=...)`` gives the entries whose test error a run with that
configuration is compared with (``cnnbench.reporting.reference.paper_reference``);
``match(..., params=True)`` the entries whose parameter count it has (``cnnbench.models.paper``).
``options`` are the run's ``model.*`` values with the builder's defaults already filled in (the callers do
that); this module imports neither torch nor the model families. The rules are in the file's header.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

# augment.name values that count as "no augmentation" (a missing augment section is *unknown*, not none).
_NO_AUGMENT = {"none", "off", "false", "no"}
# Range conditions: `{gt: 0}` matches any value above 0.
_RANGES = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


@functools.lru_cache(maxsize=1)
def load_reference() -> dict[str, Any]:
    """The parsed ``cnnbench/core/reference.yaml`` (shipped as package data)."""
    text = resources.files("cnnbench.core").joinpath("reference.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def entries() -> list[dict[str, Any]]:
    """Every entry, in file order."""
    return load_reference()["entries"]


def family_note(model: str) -> str | None:
    """Why a family has no paper numbers (e.g. plain nets), if the reference file says."""
    return (load_reference().get("notes") or {}).get(model)


def family_options(model: str) -> dict[str, Any]:
    """The options a family's entries are distinguished by, with what an entry not naming one stands for."""
    return dict(((load_reference().get("families") or {}).get(model) or {}).get("options") or {})


def same_count_options(model: str) -> set[str]:
    """Options that do not change a family's parameter count at the printed precision."""
    return set(((load_reference().get("families") or {}).get(model) or {}).get("same_count") or ())


def citation(source: str) -> str:
    """The full reference of a ``sources`` key, on one line."""
    return " ".join(load_reference()["sources"][source].split())


def dataset_label(data: str | None, augment: str | None) -> str | None:
    """The papers' column (C10, C10+, ...) for ``data.name`` and ``augment.name``, or None."""
    if data is None or augment is None:
        return None
    augment = "none" if augment in _NO_AUGMENT else augment
    for label, spec in load_reference()["datasets"].items():
        if spec["data"] == data and spec["augment"] == augment:
            return label
    return None


def conditions(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What an entry requires of ``model.*``: its family's options overlaid with the entry's own."""
    return {**family_options(entry["model"]), **(entry.get("options") or {})}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_matches(want: Any, have: Any) -> bool:
    """One condition: a range (``{gt: 0}``), or equality of numbers, booleans, strings or null."""
    if isinstance(want, Mapping):
        return _is_number(have) and all(_RANGES[op](have, bound) for op, bound in want.items())
    if isinstance(want, bool) or isinstance(have, bool):
        return isinstance(want, bool) and isinstance(have, bool) and want == have
    if _is_number(want):
        return _is_number(have) and math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-12)
    return want == have


def match(
    model: str,
    depth: int | None,
    options: Mapping[str, Any],
    *,
    dataset: str | None = None,
    params: bool = False,
) -> list[dict[str, Any]]:
    """The entries (file order) that a ``model``/``depth``/``options`` configuration matches.

    With ``dataset`` (a column such as ``"C10+"``) only entries with a test error there; with
    ``params=True`` only entries with a usable parameter count, ignoring the family's ``same_count``
    options. A condition on an option missing from ``options`` compares with the family's value in the
    file (callers fill in the builder's defaults first, so this only happens for families cnnbench does
    not build).
    """
    ignored = same_count_options(model) if params else set()
    found = []
    for entry in entries():
        if entry["model"] != model:
            continue
        if entry.get("depth") is not None and entry["depth"] != depth:
            continue
        if dataset is not None and dataset not in (entry.get("errors") or {}):
            continue
        if params and (entry.get("params_m") is None or entry.get("params_misprinted")):
            continue
        defaults = family_options(model)
        if all(
            value_matches(want, options.get(key, defaults.get(key)))
            for key, want in conditions(entry).items()
            if key not in ignored
        ):
            found.append(entry)
    return found
