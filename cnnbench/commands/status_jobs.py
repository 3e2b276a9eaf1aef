"""`cnnbench status PATH...`: every job of a run or sweep folder at a glance, read from its small files.

Reads metrics.json, .hydra/config.yaml, .hydra/overrides.yaml and multirun.yaml only (json and yaml; the
sweep's expected jobs through Hydra's override parser): no torch, no model, no checkpoint is loaded, and
nothing is written. A 16-job sweep answers in a fraction of a second.

States: the metrics.json ``status`` (completed, running, interrupted, diverged, failed), and

- ``running``: a process holds the run folder's lock (``run.lock``) for training; the row names it (pid,
  host, since when). A job whose lock is held is running even before its first metrics.json.
- ``stale``: metrics.json says running but no process holds ``run.lock``: the trainer died without a
  chance to save (SIGKILL, node loss). For runs of versions without ``run.lock``, or a file system
  without record locks, the guess from file times: metrics.json has not been rewritten for longer than
  ``max(STALE_FLOOR_S, 3 x the run's write interval)``. A running job rewrites metrics.json at every
  evaluation (``trainer.eval_every`` iterations); the interval is that many iterations at the run's own
  pace (``elapsed_seconds / iteration``). The floor covers start-up (data loading, compilation) and runs
  without a measured pace. A killed process (SIGKILL, node loss) cannot update its status, so its job
  stays "running" forever: shown as ``running?`` with the age of the file.
- ``not started``: a job folder without metrics.json yet, or a combination of the sweep with no folder.
- ``unreadable``: a job whose metrics.json cannot be read or makes no sense; the reason is shown and the
  rest of the table is not affected.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.overrides import hydra_value
from cnnbench.rundir.files import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    MULTIRUN_RECORD,
    SAVED_CONFIG,
    SAVED_OVERRIDES,
    STATUSES,
)
from cnnbench.rundir.lock import FREE, HELD, Probe, probe

STALE = "stale"
NOT_STARTED = "not started"
UNREADABLE = "unreadable"
# Every state, in the order the summary counts them.
STATES = (*STATUSES[:2], STALE, *STATUSES[2:], NOT_STARTED, UNREADABLE)
UNFINISHED = ("running", STALE, "interrupted", "failed")  # states that get an ETA

STALE_FLOOR_S = 600.0  # no verdict of "stale" before 10 minutes without an update
STALE_FACTOR = 3.0  # ... or 3 write intervals, whichever is longer
DEFAULT_EVAL_EVERY = 400  # conf/trainer/default.yaml, for runs whose saved config cannot be read
MESSAGE_WIDTH = 60  # the table's message column; --json has the whole message


@dataclass
class Job:
    """One job's row: what its files say (or why they cannot be read)."""

    job: str  # the folder name relative to the sweep (override dirname), or the run folder's name
    path: str | None  # None for a sweep combination that never got a folder
    state: str
    iteration: int | None = None
    max_iters: int | None = None
    attempts: int = 0
    message: str | None = None  # the error, divergence, interruption or staleness, in full
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None
    metrics_age_seconds: float | None = None  # since metrics.json was last written
    checkpoint: bool = False
    diverged_at: int | None = None
    overrides: list[str] | None = None
    model: str | None = None
    depth: int | None = None
    seed: int | None = None
    train_error: float | None = None
    test_error: float | None = None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    holder: dict[str, Any] | None = None  # who holds run.lock (pid, host, since, command, job_id)

    @property
    def percent(self) -> float | None:
        if self.iteration is None or not self.max_iters:
            return None
        return 100.0 * self.iteration / self.max_iters

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "percent": None if self.percent is None else round(self.percent, 1)}


@dataclass
class FolderStatus:
    """A run folder (one job) or a sweep folder (every job, started or not)."""

    path: Path
    kind: str  # "run" or "sweep"
    jobs: list[Job]
    expected_jobs: int | None = None  # sweeps: the number of combinations, None if unknown
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATES if (n := sum(j.state == s for j in self.jobs))}

    def iterations(self) -> tuple[int, int | None]:
        """Iterations done over all jobs, and the total (None when some job's total is unknown)."""
        done = sum(j.iteration or 0 for j in self.jobs)
        totals = [j.max_iters for j in self.jobs]
        return done, None if any(t is None for t in totals) else sum(totals)  # type: ignore[arg-type]

    def next_steps(self) -> list[str]:
        """What to do next, one sentence each; empty when every job completed."""
        counts = self.counts()
        target = shlex.quote(str(self.path))
        steps = []
        resumable = sum(counts.get(s, 0) for s in ("interrupted", "failed", STALE, NOT_STARTED))
        if self.kind == "run" and resumable:
            if (self.path.parent / MULTIRUN_RECORD).is_file():
                steps.append(f"It is a job of a sweep: cnnbench resume {shlex.quote(str(self.path.parent))}")
            elif self.jobs[0].checkpoint:
                steps.append(f"Continue it: cnnbench resume {target}")
            else:
                steps.append(
                    f"It has no checkpoint yet: start it again in place with `cnnbench train "
                    f"{_run_dir_override(self.path)}` and the overrides in "
                    f"{shlex.quote(str(self.path / SAVED_OVERRIDES))}."
                )
        elif resumable:
            wait = (
                f" once the {counts['running']} running job(s) have stopped (resume refuses jobs in training)"
                if counts.get("running")
                else ""
            )
            steps.append(f"Resume the unfinished jobs{wait}: cnnbench resume {target}")
        if counts.get(STALE):
            steps.append(
                "Jobs shown as running? stopped without saving their state: no process holds their run.lock, "
                "or (runs without one) they have not updated metrics.json for a long time. Make sure their "
                "process is gone before resuming."
            )
        if counts.get("diverged"):
            steps.append(
                "Diverged jobs are not resumed (they would diverge again, exactly): train them anew with a "
                "lower optimizer.lr or a warm-up (schedule.warmup_iters=400)."
            )
        if counts.get(UNREADABLE):
            steps.append("Check the unreadable jobs' metrics.json (the reason is in the table).")
        return steps

    def summary(self) -> dict[str, Any]:
        done, total = self.iterations()
        return {
            "jobs": len(self.jobs),
            "expected_jobs": self.expected_jobs,
            "counts": self.counts(),
            "iterations_done": done,
            "iterations_total": total,
            "next": self.next_steps(),
            "notes": list(self.notes),
        }

    def record(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "jobs": [j.record() for j in self.jobs],
            "summary": self.summary(),
        }


def _run_dir_override(path: Path) -> str:
    """``hydra.run.dir=PATH`` as one shell word that Hydra reads as one value."""
    word = f"hydra.run.dir={hydra_value(str(path))}"
    return f'"{word}"' if "'" in word and not re.search(r'["$`\\!]', word) else shlex.quote(word)


# ----- reading --------------------------------------------------------------------------------------
def yaml_load(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def _read_yaml(path: Path) -> Any:
    """A small YAML file, or None when it is missing or unreadable (the caller says so if it matters)."""
    try:
        return yaml_load(path)
    except Exception:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _trainer_setting(config: Any, key: str) -> int | None:
    trainer = config.get("trainer") if isinstance(config, dict) else None
    return _int(trainer.get(key)) if isinstance(trainer, dict) else None


def _stale_after(elapsed: float | None, iteration: int | None, eval_every: int) -> float:
    """Seconds without a metrics.json update after which a running job is presumed dead."""
    if not elapsed or not iteration:
        return STALE_FLOOR_S
    return max(STALE_FLOOR_S, STALE_FACTOR * eval_every * elapsed / iteration)


def read_job(folder: Path, name: str, now: float | None = None) -> Job:
    """One job folder's row; never raises for a bad file (the row says ``unreadable`` and why)."""
    now = time.time() if now is None else now
    config = _read_yaml(folder / SAVED_CONFIG)
    overrides = _read_yaml(folder / SAVED_OVERRIDES)
    job = Job(
        job=name,
        path=str(folder),
        state=UNREADABLE,
        max_iters=_trainer_setting(config, "max_iters"),
        checkpoint=(folder / CHECKPOINT_NAME).is_file(),
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else None,
    )
    lock = probe(folder)
    if lock.state == HELD and lock.holder is not None:
        job.holder = lock.holder.record()
    training = lock.state == HELD and (lock.holder is None or lock.holder.command in ("train", None))
    metrics_path = folder / METRICS_NAME
    if not metrics_path.exists():
        if training:
            job.state, job.message = "running", f"starting: {_holder_text(lock)}"
        elif job.checkpoint:
            job.message = "checkpoint.pt but no metrics.json"
        else:
            job.state, job.message = NOT_STARTED, "no metrics yet"
        return job
    try:
        mtime = metrics_path.stat().st_mtime
        data = json.loads(metrics_path.read_text())
    except OSError as exc:
        job.message = f"cannot read metrics.json: {exc.strerror or exc}"
        return job
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        job.message = f"metrics.json is not valid JSON ({reason})"
        return job
    if not isinstance(data, dict):
        job.message = f"metrics.json holds a {type(data).__name__}, not an object"
        return job
    status = data.get("status")
    if status not in STATUSES:
        job.message = f"metrics.json has status {status!r}, expected one of {', '.join(STATUSES)}"
        return job

    attempts = data.get("attempts")
    job.attempt_log = [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []
    job.attempts = len(job.attempt_log) or 1  # runs written before attempts were recorded: one
    job.state = status
    job.iteration = _int(data.get("iteration"))
    job.max_iters = _int(data.get("max_iters")) or job.max_iters
    job.elapsed_seconds = _float(data.get("elapsed_seconds"))
    job.metrics_age_seconds = max(0.0, now - mtime)
    job.diverged_at = _int(data.get("diverged_at"))
    job.model = data.get("model") if isinstance(data.get("model"), str) else None
    job.depth, job.seed = _int(data.get("depth")), _int(data.get("seed"))
    job.train_error, job.test_error = _float(data.get("train_error")), _float(data.get("test_error"))

    message = data.get("message")
    last_reason = job.attempt_log[-1].get("reason") if job.attempt_log else None
    if not message and status in ("interrupted", "failed", "diverged") and isinstance(last_reason, str):
        message = last_reason
    if status == "diverged" and job.diverged_at is not None:
        message = f"at iteration {job.diverged_at:,}" + (f": {message}" if message else "")
    job.message = str(message) if message else None

    if training and status not in ("completed", "diverged"):
        # A resumed run is running from the moment it holds the lock, before it rewrites metrics.json.
        job.state, job.message = "running", _holder_text(lock)
    elif lock.state == HELD and not job.message:
        job.message = f"in use: {_holder_text(lock)}"  # eval or export writing into the folder
    elif status == "running" and lock.state == FREE:
        job.state = STALE
        job.message = "no process holds run.lock: killed without a chance to save?"
    elif status == "running":  # no run.lock (older versions) or no record locks: guess from file times
        eval_every = _trainer_setting(config, "eval_every") or DEFAULT_EVAL_EVERY
        if job.metrics_age_seconds > _stale_after(job.elapsed_seconds, job.iteration, eval_every):
            job.state = STALE
            age = format_duration(job.metrics_age_seconds)
            job.message = f"no update of metrics.json for {age}: process killed?"
    if job.state in UNFINISHED and job.iteration and job.elapsed_seconds and job.max_iters:
        left = max(0, job.max_iters - job.iteration)
        job.eta_seconds = job.elapsed_seconds / job.iteration * left
    return job


def _holder_text(lock: Probe) -> str:
    holder = lock.holder
    if holder is None:
        return "held by another process"
    what = "" if holder.command in ("train", None) else f"cnnbench {holder.command} by "
    return what + holder.describe()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
