"""`cnnbench eval`'s options and results: what to evaluate (split, weights, TTA, precision, another
dataset composed by Hydra) and the record of one evaluation, as eval.json holds it. No torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.commands.choices import EVAL_PRECISIONS, SPLITS, TTA_CHOICES
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.weights import WEIGHTS

EVAL_NAME = "eval.json"
CONFUSION_NAME = "confusion.png"
# Data-section keys that do not change which images are loaded (the cache ignores them).
NOT_LOADING_KEYS = {"normalize"}


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    weights: str = "last"
    tta: str = "none"
    data: dict[str, Any] = field(default_factory=dict)  # data-section overrides (parse_data_overrides)
    # run: the numerics the run's own evaluations used (its recorded fast path), so the numbers match.
    precision: str = "run"
    device: str = "auto"

    def check(self) -> None:
        for option, value, choices in (
            ("--split", self.split, SPLITS),
            ("--weights", self.weights, tuple(WEIGHTS)),
            ("--tta", self.tta, TTA_CHOICES),
            ("--precision", self.precision, EVAL_PRECISIONS),
        ):
            if value not in choices:
                raise CnnbenchError(f"{option} {value!r} is not valid; use one of {', '.join(choices)}.")

    @property
    def key(self) -> str:
        """The eval.json entry this evaluation fills: another split, weights, TTA, precision or data is
        another entry; the same evaluation again replaces its entry."""
        parts = [
            f"split={self.split}",
            f"weights={self.weights}",
            f"tta={self.tta}",
            f"precision={self.precision}",
        ]
        parts += [f"data.{k}={value_text(v)}" for k, v in sorted(self.data.items())]
        return ",".join(parts)


@dataclass
class EvalResult:
    run_dir: str
    key: str
    model: str
    depth: int
    weights: str
    checkpoint: str
    iteration: int
    max_iters: int
    complete: bool
    status: str | None  # metrics.json's status
    split: str
    tta: str
    precision: str
    data: str  # the dataset's name
    data_overrides: dict[str, Any]
    synthetic: bool
    images: int
    loss: float
    error: float
    per_class_error: list[float | None]  # None for a class with no images in the split
    confusion: list[list[int]]  # [true class][predicted class] counts
    seconds: float
    img_per_s: float
    evaluated_at: str = ""
    compiled: bool = False  # evaluated with torch.compile, as the run's own evaluations were

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    results: list[EvalResult]
    failures: list[tuple[Path, str]]  # run folder, one-paragraph message
    data_loads: int  # datasets loaded (once per distinct data section)


# ---- options ------------------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def parse_data_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["data=cifar10", "root=/x", "data.val_size=5000"]`` -> ``{"name": "cifar10", "root": "/x", ...}``.

    ``data=NAME`` (or ``name=NAME``) switches to another dataset, starting from its ``conf/data/NAME.yaml``;
    ``KEY=VALUE`` or ``data.KEY=VALUE`` sets one key of the data section. Values are read as YAML
    (``5000`` is a number, ``true`` a boolean, ``null`` None)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if key in ("data", "data.name"):
            key = "name"
        elif key.startswith("data."):
            key = key[len("data.") :]
        if not sep or not key or "." in key or "/" in key:
            raise CnnbenchError(
                f"--data {item!r} is not a data override; write KEY=VALUE with a key of the data section, "
                f"e.g. --data root=/path/to/cifar10-c, --data val_size=5000, or --data data=cifar100 to "
                f"evaluate on another dataset."
            )
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def _hydra_literal(value: Any) -> str:
    """A parsed ``--data`` value written back as a Hydra override value."""
    from cnnbench.core.overrides import hydra_value

    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_literal(v) for v in value) + "]"
    return hydra_value(str(value))


def _data_options() -> tuple[str, ...]:
    from cnnbench.core.overrides import config_groups

    return tuple(sorted(config_groups().get("data", ())))


def _composed_data(name: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The data section Hydra composes for ``data=NAME`` with ``data.KEY=VALUE`` for ``sets`` (resolved)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cnnbench.core.overrides import compose

    overrides = [f"data={name}", *(f"data.{key}={_hydra_literal(value)}" for key, value in sets.items())]
    try:
        return OmegaConf.to_container(compose(overrides).data, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        given = " ".join(f"{key}={value}" for key, value in sets.items())
        raise CnnbenchError(
            f"--data {given}: {str(exc).splitlines()[0]}. Give values of the types that "
            f"`cnnbench config data={name} -p data` shows."
        ) from None


def data_section(cfg: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run's data section (resolved) with ``overrides`` composed by Hydra: ``name`` switches to
    another dataset (its data group option, as `cnnbench train data=NAME` composes it), the other keys
    are set on it. Unknown keys are refused (a typo would otherwise be ignored by the loader)."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(cfg.data, resolve=True)
    sets = {key: value for key, value in overrides.items() if key != "name"}
    name = str(overrides.get("name", section.get("name")))
    switched = name != section.get("name")
    if name not in _data_options():
        if switched:
            raise CnnbenchError(
                f"--data data={name}: no such dataset; use one of {', '.join(_data_options())}."
            )
        known = set(section)  # a dataset of the user's own config folder: its keys as the run saved them
    else:
        known = set(_composed_data(name, {})) | (set() if switched else set(section))
    for key in sets:
        if key not in known:
            raise CnnbenchError(
                f"--data {key}=...: the {name} data section has no key {key!r}; its keys are "
                f"{', '.join(sorted(known))}."
            )
    if name not in _data_options():
        return {**section, **sets}
    composed = _composed_data(name, sets)
    return composed if switched else {**section, **{key: composed[key] for key in sets}}
