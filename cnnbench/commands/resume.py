"""`cnnbench resume DIR`: continue a run folder, or every unfinished job of a multirun folder.

A single run continues in-process from its saved ``.hydra/config.yaml`` and ``checkpoint.pt``.
A sweep is launched again through Hydra with its original overrides and launcher, into the same
folder, with ``CNNBENCH_RESUME`` set for the jobs: each job then skips itself if completed (or
diverged: resuming would reproduce the divergence exactly), continues from its checkpoint, or starts
if it never ran. ``hydra.output_subdir=null`` keeps Hydra from rewriting the jobs' saved configs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.core.overrides import hydra_value
from cnnbench.rundir.checkpoint import has_checkpoint
from cnnbench.rundir.files import (
    MULTIRUN_RECORD,
    SAVED_CONFIG,
    SAVED_OVERRIDES,
    read_metrics,
    saved_config,
)
from cnnbench.rundir.find import runs_under

log = logging.getLogger("cnnbench")

SKIP_STATUSES = ("completed", "diverged")


def resume_run(run_dir: Path) -> int:
    """Continue one run folder in place, as ``trainer.resume=must`` does; returns the exit code."""
    from cnnbench.core.optim import check_saved_target
    from cnnbench.engine.trainer import run
    from cnnbench.rundir.continuation import decide
    from cnnbench.rundir.logs import setup_logging

    metrics = read_metrics(run_dir) or {}
    if metrics.get("status") == "completed":
        print(
            f"{run_dir} is already completed ({metrics.get('iteration')}/{metrics.get('max_iters')} "
            f"iterations); nothing to resume, nothing changed."
        )
        return 0
    cfg = saved_config(run_dir)
    check_saved_target(cfg.get("optimizer") or {}, run_dir / SAVED_CONFIG)  # before anything imports it
    start = decide(cfg, run_dir, mode="must")  # diverged: refused; no checkpoint yet: started again
    setup_logging(run_dir)
    run(cfg, run_dir, resume=start.resume, restart=start.restart)
    return 0


def resume_sweep_job(
    composed: DictConfig, run_dir: Path, sweep_dir: Path | None = None
) -> dict[str, Any] | None:
    """One job of a resumed sweep (runs inside the Hydra job, whatever the launcher)."""
    from cnnbench.core.optim import check_saved_target
    from cnnbench.engine.trainer import run
    from cnnbench.rundir.lock import refuse_if_held

    metrics = read_metrics(run_dir) or {}
    status = metrics.get("status")
    if status in SKIP_STATUSES:
        # print, not log: Hydra's job logging appends to the job's train.log, and a finished job's
        # folder stays untouched.
        print(f"{run_dir.name}: already {status}, skipped.")
        return metrics
    if has_checkpoint(run_dir):  # checkpoint.pt, or the previous one if the last was lost
        log.info("%s: resuming from its checkpoint (%s).", run_dir.name, status)
        cfg = saved_config(run_dir)
        check_saved_target(cfg.get("optimizer") or {}, run_dir / SAVED_CONFIG)
        return run(cfg, run_dir, resume=True, sweep_dir=sweep_dir)
    # Composed from the overrides recorded in the sweep folder's multirun.yaml: read from a folder too.
    check_saved_target(composed.get("optimizer") or {}, (sweep_dir or run_dir.parent) / MULTIRUN_RECORD)
    refuse_if_held(run_dir)  # another process trains it: leave its .hydra/ record alone
    log.info("%s: no checkpoint yet, starting it.", run_dir.name)
    _save_hydra_record(composed, run_dir)
    return run(composed, run_dir, resume=False, restart=True, sweep_dir=sweep_dir)


def _save_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """What Hydra would have written into .hydra/ had output_subdir not been switched off."""
    from hydra.core.hydra_config import HydraConfig

    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    OmegaConf.save(cfg, run_dir / SAVED_CONFIG)
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), hydra_dir / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, run_dir / SAVED_OVERRIDES)


def _saved_optimizer(run_dir: Path) -> Any:
    try:
        return OmegaConf.load(run_dir / SAVED_CONFIG).get("optimizer") or {}
    except Exception:  # an unreadable config: the job itself says what is wrong with it
        return {}


SUBDIR_KEY = "hydra.sweep.subdir="


def _job_folder_naming(record: DictConfig) -> list[str]:
    """The sweep's own job-folder naming, as an override: a sweep made when folders were named by
    override_dirname resumes into those folders, not into new ones named by what varies."""
    from cnnbench.rundir.names import OVERRIDE_DIRNAME_SUBDIR, SUBDIR

    subdir = OmegaConf.to_container(record.hydra.sweep, resolve=False).get("subdir")
    return [f"{SUBDIR_KEY}{subdir}"] if subdir in (SUBDIR, OVERRIDE_DIRNAME_SUBDIR) else []


def resume_sweep(sweep_dir: Path) -> list[str]:
    """Hydra arguments that launch the sweep again into ``sweep_dir`` in resume mode.

    Prints which jobs are done and which will be resumed.
    """
    from cnnbench.core.optim import check_saved_target

    record = OmegaConf.load(sweep_dir / MULTIRUN_RECORD)
    jobs = list(runs_under(sweep_dir))
    done = [j for j in jobs if (read_metrics(j) or {}).get("status") in SKIP_STATUSES]
    for job in jobs:  # each job checks its own again; this refuses the sweep before any job starts
        if job not in done:
            check_saved_target(_saved_optimizer(job), job / SAVED_CONFIG)
    print(
        f"{sweep_dir}: {len(jobs)} job folders, {len(done)} finished "
        f"({', '.join(j.name + ': ' + str(read_metrics(j)['status']) for j in done) or 'none'})."
    )
    pending = [j.name for j in jobs if j not in done]
    print(f"Resuming: {', '.join(pending) or 'no started job'}; jobs that never started are started.")
    naming = _job_folder_naming(record)
    replaced = ("hydra.sweep.dir=", "hydra.output_subdir=", "+hydra.job.env_set")
    replaced += (SUBDIR_KEY,) if naming else ()
    # As recorded, unresolved: an override's value may hold an interpolation (hydra.sweep.subdir=${...}).
    overrides = OmegaConf.to_container(record.hydra.overrides, resolve=False)
    hydra_overrides = [o for o in overrides["hydra"] if not o.startswith(replaced)]
    return [
        "--multirun",
        *hydra_overrides,
        f"hydra.sweep.dir={hydra_value(str(sweep_dir.resolve()))}",
        *naming,
        "hydra.output_subdir=null",
        "+hydra.job.env_set.CNNBENCH_RESUME=1",
        *overrides["task"],
    ]
