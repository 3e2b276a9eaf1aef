"""Sweep job folders, and so TensorBoard run names, named by what varies across the sweep.

``hydra.sweep.subdir: ${cnnbench.run_name:}`` (conf/config.yaml). A job's folder name keeps only its
overrides of the keys that take several values in the sweep (comma lists, ``range()``, ``choice()``,
``glob()``, and the keys of the experiment's ``hydra.sweeper.params``), sorted by key with ``seed``
last: ``depth=20,model=plain,seed=1``. Constants (``data=digits``, ``trainer.max_iters=400``) are left
out, so TensorBoard's run list and legends show what tells the runs apart. When nothing varies, the
name is Hydra's ``override_dirname``.

Why a resolver that reads ``multirun.yaml``: a job's config is composed afresh from the job's own
overrides (``depth=8``), so which keys the sweep varied (``depth=8,20``) is not in it. The sweeper
writes the sweep's config, overrides included, to ``<sweep dir>/multirun.yaml`` before launching any
job, and every launcher resolves ``hydra.sweep.subdir`` inside the job (basic: in the sweep's process;
joblib, submitit: in the job's process, with the same folder). ``cnnbench resume`` launches the same
overrides again, so the sweeper writes the same record and every job lands in its old folder.

This module imports no torch and no engine: ``cnnbench status`` names never-launched jobs with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.rundir.files import MULTIRUN_RECORD  # written by the sweeper before the first job

RESOLVER = "cnnbench.run_name"
SUBDIR = "${" + RESOLVER + ":}"  # what conf/config.yaml puts in hydra.sweep.subdir
OVERRIDE_DIRNAME_SUBDIR = "${hydra.job.override_dirname}"  # Hydra's default (sweeps made before this)
LAST_KEYS = ("seed",)  # sorted last: the seeds of one configuration sit side by side

# Not allowed in a file name on Windows (and '/' nowhere): <>:"/\|?* and control characters.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_MAX_NAME = 200  # below the 255 bytes most file systems allow for one name, leaving room for a hash


@dataclass(frozen=True)
class Naming:
    """Hydra's ``hydra.job.config.override_dirname`` settings."""

    exclude_keys: frozenset[str] = field(default_factory=frozenset)
    item_sep: str = ","
    kv_sep: str = "="

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> Naming:
        settings = settings or {}
        return cls(
            frozenset(str(k) for k in settings.get("exclude_keys") or ()),
            str(settings.get("item_sep", ",")),
            str(settings.get("kv_sep", "=")),
        )


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def _takes_several_values(override: Any) -> bool:
    if not override.is_sweep_override():
        return False
    if not override.is_discrete_sweep():
        return True  # interval(): a sweeper such as Optuna draws a new value per job
    try:
        return len(set(override.sweep_string_iterator())) > 1  # depth=choice(8) is a constant
    except Exception:  # glob() lists its options through Hydra's config loader only: assume several
        return True


def varying_keys(sweep_overrides: Sequence[str], sweeper_params: Mapping[str, Any] | None = None) -> set[str]:
    """The keys (``depth``, ``+foo``, ``model``) whose value differs between a sweep's jobs.

    As Hydra's BasicSweeper combines them: the sweeper's ``params`` first, then the command line's
    overrides, a later override of a key replacing an earlier one (``experiment=degradation_seeds
    seed=0`` does not vary the seed)."""
    params = [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    final = {o.get_key_element(): o for o in _parse([*params, *sweep_overrides])}
    return {key for key, override in final.items() if _takes_several_values(override)}


def override_dirname(job_overrides: Sequence[str], naming: Naming) -> str:
    """Hydra's own ``hydra.job.override_dirname`` (hydra._internal.config_loader_impl)."""
    lines = sorted(o.input_line for o in _parse(job_overrides) if o.key_or_group not in naming.exclude_keys)
    return re.sub("=", naming.kv_sep, naming.item_sep.join(lines))


def job_name(job_overrides: Sequence[str], varying: set[str], naming: Naming) -> str:
    """The job's folder name: its overrides of ``varying`` keys (not excluded ones), sorted by key with
    seed last; Hydra's override_dirname when none varies. Always a valid single folder name."""
    kept = [
        o
        for o in _parse(job_overrides)
        if o.get_key_element() in varying and o.key_or_group not in naming.exclude_keys
    ]
    if not kept:
        return safe_folder_name(override_dirname(job_overrides, naming))
    kept.sort(key=lambda o: (o.key_or_group in LAST_KEYS, o.get_key_element(), o.input_line))
    return safe_folder_name(re.sub("=", naming.kv_sep, naming.item_sep.join(o.input_line for o in kept)))


def safe_folder_name(name: str) -> str:
    """``name`` when it is a valid folder name on every OS; otherwise its unsafe characters replaced
    (or its end cut), with a hash of the original appended so that distinct names stay distinct."""
    safe = _UNSAFE.sub("_", name).rstrip(". ")  # Windows drops trailing dots and spaces
    if safe == name and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{safe[:_MAX_NAME]}-{digest}"


def record_job_name(record_hydra: Mapping[str, Any], job_overrides: Sequence[str]) -> str | None:
    """The folder a sweep recorded in multirun.yaml (its ``hydra`` section, plain data) gives the job
    with ``job_overrides``; None when the sweep names its folders some other way."""
    subdir = str((record_hydra.get("sweep") or {}).get("subdir", ""))
    naming = Naming.of(((record_hydra.get("job") or {}).get("config") or {}).get("override_dirname"))
    if subdir == OVERRIDE_DIRNAME_SUBDIR:
        return override_dirname(job_overrides, naming)
    if subdir != SUBDIR:
        return None
    sweep = (record_hydra.get("overrides") or {}).get("task") or []
    params = (record_hydra.get("sweeper") or {}).get("params") or {}
    return job_name(job_overrides, varying_keys(sweep, params), naming)


def _read_record(sweep_dir: Path) -> dict[str, Any] | None:
    import yaml

    try:
        record = yaml.safe_load((sweep_dir / MULTIRUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("hydra"), dict) else None


def _resolve_run_name(*, _root_: DictConfig) -> str:
    """``${cnnbench.run_name:}``, resolved by Hydra inside each job of a sweep."""
    hydra = _root_.hydra
    job_overrides = OmegaConf.to_container(hydra.overrides.task, resolve=False)  # as given, like Hydra's
    record = _read_record(Path(str(hydra.sweep.dir)))
    if record is None:  # not a sweep's job (the sweeper writes the record before the first job)
        return safe_folder_name(str(hydra.job.override_dirname))
    sweep = record["hydra"].get("overrides") or {}
    params = (record["hydra"].get("sweeper") or {}).get("params") or {}
    naming = Naming.of(OmegaConf.to_container(hydra.job.config.override_dirname, resolve=True))
    return job_name(job_overrides, varying_keys(sweep.get("task") or [], params), naming)


def register() -> None:
    """Register ``${cnnbench.run_name:}`` (idempotent). Importing this module does it."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_run_name)


register()
