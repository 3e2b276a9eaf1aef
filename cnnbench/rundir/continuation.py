"""Starting in a folder that may hold a run: continue it, return at once, start it, or refuse.

``trainer.resume`` decides (``cnnbench resume`` uses the same path with ``must``):

- ``auto`` (the default): a folder holding the *same* run (its saved config equals this one, apart from
  the settings a resume may change: device, compile, eval batch size, data location) continues from its
  checkpoint, or starts again if it never reached one; a completed run returns at once, untouched; a
  diverged run is refused (it would diverge again, exactly); *another* run is refused with the diff.
  This is what a requeued SLURM job, a restarted torchrun worker or a repeated command needs.
- ``never``: a folder that holds a run is refused (the behaviour of cnnbench before ``auto``).
- ``must``: there must be a run to continue (a checkpoint of the same run).

Each start of a run is an *attempt*, recorded in metrics.json (``attempts``: number, job id, host, start
and stop time, why it stopped, iterations), so a run's history across requeues can be read back.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.checkpoint import has_checkpoint
from cnnbench.rundir.files import MULTIRUN_RECORD, SAVED_CONFIG, existing_run_error, holds_run, read_metrics
from cnnbench.rundir.lock import refuse_if_held

# Settings a resumed run may change: where it runs and how fast, not what it computes.
RESUME_MAY_CHANGE = (
    "trainer.device",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.cuda_graphs",
    "trainer.fused_optimizer",
    "trainer.eval_batch_size",
    "data.root",
    "data.download",
    "data.url",
    "data.md5",
    "trainer.resume",
)


RESUME_MODES = ("auto", "never", "must")
KILLED = "killed without a chance to save (SIGKILL, node loss): continued from the last checkpoint"


@dataclass(frozen=True)
class Start:
    """How to start: ``resume`` from the checkpoint, ``restart`` a run that never checkpointed, or
    ``done`` (the run is completed: return its metrics, change nothing)."""

    resume: bool = False
    restart: bool = False
    done: dict[str, Any] | None = None


def resume_mode(cfg: DictConfig) -> str:
    mode = str(cfg.trainer.get("resume", "never"))  # configs saved before the key: the old behaviour
    if mode not in RESUME_MODES:
        raise CnnbenchError(
            f"trainer.resume={mode!r} is not a resume mode; use auto (continue the same run, refuse "
            f"another), never (refuse any folder holding a run) or must (there must be a run to continue)."
        )
    return mode


def _saved(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SAVED_CONFIG
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else None
    except Exception:  # an unreadable saved config: compare against the checkpoint's instead
        return None


def decide(
    cfg: DictConfig, run_dir: Path, mode: str | None = None, saved_config: Mapping | None = None
) -> Start:
    """How a run with ``cfg`` starts in ``run_dir`` (raises CnnbenchError when it must not).

    ``saved_config``: the config the folder's run was started with, when known (Hydra may already
    have rewritten ``.hydra/config.yaml``); else read from the folder.

    A folder that another process trains (or writes into) is refused first: Hydra's callback calls this
    before Hydra writes ``.hydra/``, so the refusal leaves the folder as it was. This is a peek; the
    trainer's own acquisition of the lock is what decides between two starts at the same moment.
    """
    refuse_if_held(run_dir)
    mode = mode or resume_mode(cfg)
    if (run_dir / MULTIRUN_RECORD).is_file():
        raise CnnbenchError(
            f"{run_dir} is a sweep folder ({MULTIRUN_RECORD}; its runs are in its job folders), not a run "
            f"folder: a single run does not go into it. Nothing was changed. Continue the sweep with "
            f"`cnnbench resume {run_dir}` (from Python: cnnbench.sweep with its overrides and "
            f"sweep_dir={str(run_dir)!r}), or give this run a folder of its own."
        )
    if not holds_run(run_dir):
        if mode == "must":
            raise CnnbenchError(
                f"{run_dir} holds no run to continue (no checkpoint.pt or metrics.json) and "
                f"trainer.resume=must. Start it with trainer.resume=auto, or point at the run's folder."
            )
        return Start()
    if mode == "never":
        raise existing_run_error(run_dir)
    metrics = read_metrics(run_dir) or {}
    status = metrics.get("status")
    saved = saved_config if saved_config is not None else _saved(run_dir)
    if saved is not None:
        changed = changed_settings(saved, OmegaConf.to_container(cfg, resolve=True))
        if changed:
            raise config_diff_error(run_dir, changed, saved, cfg)
    if status == "completed":
        return Start(done=metrics)
    if status == "diverged":
        raise CnnbenchError(
            f"{run_dir} diverged at iteration {metrics.get('diverged_at')}; continuing its last checkpoint "
            f"with the same settings would diverge again, exactly. Nothing was changed. Start a new run with "
            f"a lower optimizer.lr or a warm-up (schedule.warmup_iters=400)."
        )
    if has_checkpoint(run_dir):
        return Start(resume=True)
    return Start(restart=True)  # it stopped before its first checkpoint: start it again, in place


# ----- attempts -------------------------------------------------------------------------------------
def job_id() -> str | None:
    """The scheduler's id of this attempt: SLURM job (array task), or torchrun's run id and restart."""
    if os.environ.get("SLURM_JOB_ID"):
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return os.environ["SLURM_JOB_ID"] + (f"_{task}" if task else "")
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}/{restart}"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_attempt(previous: list[dict[str, Any]], iteration: int) -> list[dict[str, Any]]:
    """The attempts so far plus a new one starting at ``iteration``; an attempt that never recorded its
    end was killed without a chance to save (SIGKILL, node loss)."""
    attempts = [dict(a) for a in previous]
    for attempt in attempts:
        if attempt.get("stopped") is None:
            attempt["stopped"] = None
            attempt["reason"] = (
                attempt.get("reason") or "killed (no chance to save): continued from the last checkpoint"
            )
    attempts.append(
        {
            "attempt": len(attempts) + 1,
            "job_id": job_id(),
            "host": socket.gethostname(),
            "started": _now(),
            "stopped": None,
            "reason": None,
            "start_iteration": iteration,
            "end_iteration": None,
        }
    )
    return attempts


def close_attempt(attempts: list[dict[str, Any]], reason: str, iteration: int) -> None:
    if attempts:
        attempts[-1].update(stopped=_now(), reason=reason, end_iteration=iteration)


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        return {
            k: v for key, value in tree.items() for k, v in flatten_config(value, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): tree}


def changed_settings(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, but for RESUME_MAY_CHANGE."""
    old, new = flatten_config(saved), flatten_config(now)
    return sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUME_MAY_CHANGE
    )


def config_diff_error(run_dir: Path, changed: list[str], saved: Mapping[str, Any], now: Any) -> CnnbenchError:
    """The refusal to continue a run under another config, with the diff."""
    old = flatten_config(saved)
    new = flatten_config(now if isinstance(now, Mapping) else OmegaConf.to_container(now, resolve=True))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    return CnnbenchError(
        f"{run_dir} holds another run: its config differs from this one ({shown}{more}), so continuing it "
        f"would not be the same run. Nothing was changed; train into a new folder (drop hydra.run.dir=...), "
        f"or restore the settings to continue it."
    )
