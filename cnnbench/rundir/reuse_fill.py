"""A reused job's folder: the source run's results linked in, and ``reused.json`` saying whence.

The folder then reads like one trained there (report, status, eval, export, TensorBoard, the API): its
checkpoints, metrics.json, env.json and TensorBoard event files are hard links to the source's (a copy
where the file system cannot link, e.g. across devices). Every writer of cnnbench replaces a file by
renaming a new one into place, never by writing into it, so a later write into either folder (an
evaluation, a continuation) never changes the other's file. The job's own ``.hydra/`` (written by Hydra,
of the same identity) and train.log stay its own.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.rundir.files import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    ENV_NAME,
    METRICS_NAME,
    discard,
    read_metrics,
    write_json_atomic,
)
from cnnbench.rundir.find import runs_under

REUSED_NAME = "reused.json"
# metrics.json last: a folder whose fill was cut short holds no metrics.json, so it is no completed run.
_FILES_FIRST = (ENV_NAME, BEST_CHECKPOINT_NAME, CHECKPOINT_NAME)
_EVENTS = "events.out.tfevents.*"


def read_reused(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(run_dir) / REUSED_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def origin_of(source: Path) -> Path:
    """The folder that trained ``source``'s result (a reused folder names its own source)."""
    reused = read_reused(source)
    if reused and isinstance(reused.get("origin"), str) and Path(reused["origin"]).is_dir():
        return Path(reused["origin"])
    return Path(source)


def _link_or_copy(source: Path, target: Path) -> str:
    try:
        os.link(source, target)
        return "linked"
    except OSError:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copy2(source, tmp)
            os.replace(tmp, target)
        finally:
            discard(tmp)
        return "copied"


def fill_from(run_dir: Path, source: Path, digest: str) -> dict[str, Any]:
    """Fill ``run_dir`` with the completed run ``source``'s results; returns its metrics."""
    run_dir, source = Path(run_dir), Path(source)
    names = [n for n in _FILES_FIRST if (source / n).is_file()]
    names += sorted(p.name for p in source.glob(_EVENTS) if p.is_file())
    how = set()
    for name in [*names, METRICS_NAME]:
        if not (run_dir / name).exists():
            how.add(_link_or_copy(source / name, run_dir / name))
    metrics = read_metrics(run_dir) or {}
    origin = origin_of(source)
    write_json_atomic(
        run_dir / REUSED_NAME,
        {
            "source": str(source.resolve()),
            "origin": str(origin.resolve()),
            "identity": digest,
            "reused_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "saved_seconds": metrics.get("elapsed_seconds"),
            "files": [*names, METRICS_NAME],
            "how": "copied" if "copied" in how else "linked",
        },
    )
    return metrics


def duration(seconds: float) -> str:
    """``3h 12m``, ``4m 05s``, ``12.3 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def reuse_summary(sweep_dir: Path) -> str | None:
    """``Reused 4 of 6 jobs from earlier runs; training time saved: 1h 02m.``, or None if none was."""
    jobs = list(runs_under(Path(sweep_dir)))
    reused = [r for r in (read_reused(job) for job in jobs) if r is not None]
    if not reused:
        return None
    saved = sum(float(r.get("saved_seconds") or 0.0) for r in reused)
    return (
        f"Reused {len(reused)} of {len(jobs)} jobs from earlier runs of the same identity (reused.json in "
        f"each); training time saved: {duration(saved)}."
    )
