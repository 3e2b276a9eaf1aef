"""The jobs of a sweep folder as `cnnbench status` shows them: the combinations its multirun.yaml
launches (as Hydra's BasicSweeper forms them), each matched to its job folder or shown as never started;
and ``folder_status``, the state of every job of a run or sweep folder."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.commands.status_jobs import NOT_STARTED, FolderStatus, Job, read_job, yaml_load
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import METRICS_NAME, MULTIRUN_RECORD
from cnnbench.rundir.find import is_run, is_sweep, runs_under


@dataclass
class Combination:
    overrides: list[str]
    dirname: str


def sweep_combinations(record: Any) -> tuple[list[Combination] | None, str | None]:
    """The jobs a sweep's multirun.yaml launches, as Hydra's BasicSweeper forms them, or (None, why not)."""
    hydra = record.get("hydra") if isinstance(record, dict) else None
    if not isinstance(hydra, dict):
        return None, f"{MULTIRUN_RECORD} has no hydra section"
    sweeper = hydra.get("sweeper") or {}
    target = str(sweeper.get("_target_", ""))
    if target and not target.endswith("BasicSweeper"):
        return None, f"the sweeper {target} decides its jobs as it goes"
    params = sweeper.get("params") or {}
    task = (hydra.get("overrides") or {}).get("task") or []
    args = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        final: dict[str, list[str]] = {}
        for override in OverridesParser.create().parse_overrides(args):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None, f"{key} is not a list of values"
                final[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                final[key] = [f"{key}={override.get_value_element_as_str()}"]
    except Exception as exc:  # Hydra's grammar errors, glob() without a config loader, ...
        return None, f"the sweep's overrides cannot be expanded here ({str(exc).splitlines()[0][:120]})"

    def dirname(combo: tuple[str, ...]) -> str:
        from cnnbench.rundir.names import Naming, override_dirname, record_job_name

        named = record_job_name(hydra, combo)  # the sweep's hydra.sweep.subdir naming
        if named is not None:
            return named
        # A subdir of the user's own: Hydra's override_dirname, the closest match to what it may hold.
        return override_dirname(
            combo, Naming.of(((hydra.get("job") or {}).get("config") or {}).get("override_dirname"))
        )

    combos = itertools.product(*final.values())
    return [Combination(list(c), dirname(c)) for c in combos], None


def _read_sweep(sweep: Path, now: float) -> FolderStatus:
    result = FolderStatus(sweep, "sweep", [])
    folders = list(runs_under(sweep))
    jobs = [read_job(f, f.relative_to(sweep).as_posix(), now) for f in folders]
    try:
        record = yaml_load(sweep / MULTIRUN_RECORD)
    except Exception as exc:
        record, combos, why = None, None, f"{MULTIRUN_RECORD} cannot be read ({str(exc).splitlines()[0]})"
    else:
        combos, why = sweep_combinations(record)
    if combos is None:
        result.notes.append(f"The number of jobs this sweep launches is unknown: {why}.")
        result.jobs = jobs
        return result

    result.expected_jobs = len(combos)
    by_overrides = {frozenset(j.overrides): j for j in jobs if j.overrides is not None}
    by_name = {j.job: j for j in jobs}
    ordered: list[Job] = []
    placed: set[int] = set()  # id() of the job folders already in a row
    for number, combo in enumerate(combos):
        job = by_overrides.get(frozenset(combo.overrides)) or by_name.get(combo.dirname)
        if job is None:
            job = Job(
                job=combo.dirname or f"job {number}",
                path=None,
                state=NOT_STARTED,
                message="never launched (no job folder)",
                overrides=combo.overrides,
                max_iters=_swept_max_iters(combo.overrides),
            )
        elif id(job) in placed:
            continue
        placed.add(id(job))
        ordered.append(job)
    extra = [j for j in jobs if id(j) not in placed]
    if extra:
        result.notes.append(
            f"{len(extra)} job folder(s) match no combination of {MULTIRUN_RECORD}: "
            f"{', '.join(j.job for j in extra[:5])}{', ...' if len(extra) > 5 else ''}."
        )
    result.jobs = ordered + extra
    _fill_max_iters(result)
    return result


def _swept_max_iters(overrides: list[str]) -> int | None:
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") == "trainer.max_iters":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _fill_max_iters(result: FolderStatus) -> None:
    """Never-launched jobs without their own trainer.max_iters take the one all the other jobs share."""
    known = {j.max_iters for j in result.jobs if j.path is not None and j.max_iters is not None}
    if len(known) != 1:
        return
    (shared,) = known
    for job in result.jobs:
        if job.path is None and job.max_iters is None:
            job.max_iters = shared


def folder_status(path: Path, now: float | None = None) -> FolderStatus:
    """Every job of a run or sweep folder; a bad path raises CnnbenchError (one paragraph, exit 2)."""
    now = time.time() if now is None else now
    path = Path(path)
    expected = (
        "a run folder (metrics.json, checkpoint.pt or .hydra/config.yaml, written by `cnnbench train`) or a "
        "sweep folder (multirun.yaml, written by `cnnbench train -m`)"
    )
    if not path.exists():
        raise CnnbenchError(f"{path} does not exist. Give {expected}.")
    if path.is_file():
        if path.name not in (METRICS_NAME, MULTIRUN_RECORD):
            raise CnnbenchError(f"{path} is a file. Give {expected}.")
        path = path.parent
    if is_sweep(path):
        return _read_sweep(path, now)
    if is_run(path):
        return FolderStatus(path, "run", [read_job(path, path.name, now)])
    inside = _folders_inside(path)
    hint = (
        f" It contains {len(inside)} such folder(s), e.g. {', '.join(inside[:3])}: give those."
        if inside
        else ""
    )
    raise CnnbenchError(f"{path} holds neither a run nor a sweep: expected {expected}.{hint}")


def _folders_inside(path: Path) -> list[str]:
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []
    return [str(c) for c in children if is_sweep(c) or is_run(c)]
