"""What a run folder and a sweep folder are, and where they are: the one finder every command uses.

A *run folder* is one that a run was started in: it holds Hydra's saved config (``.hydra/config.yaml``,
written before training starts), ``metrics.json`` or ``checkpoint.pt``. A *sweep folder* holds Hydra's
``multirun.yaml``; its jobs are the run folders below it, nested when an override value holds a ``/``.
Report, eval, status, export, the diagnostics and the Python API all find runs through here, so a folder
is a run for one command exactly when it is one for the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import CHECKPOINT_NAME, METRICS_NAME, MULTIRUN_RECORD, SAVED_CONFIG

# The files that mark a run folder, the first written first.
RUN_MARKERS = (SAVED_CONFIG, METRICS_NAME, CHECKPOINT_NAME)

WHAT_TO_GIVE = (
    "a run folder (metrics.json, checkpoint.pt or .hydra/config.yaml, written by `cnnbench train`), a "
    "sweep folder (multirun.yaml, written by `cnnbench train -m`, e.g. outputs/multirun/<stamp>) or a "
    "folder holding several of them"
)


def is_run(folder: Path) -> bool:
    """A run was started in ``folder`` (it may have ended, or have been stopped before any step)."""
    return any((folder / marker).exists() for marker in RUN_MARKERS)


def is_sweep(folder: Path) -> bool:
    return (folder / MULTIRUN_RECORD).is_file()


def runs_under(folder: Path) -> Iterator[Path]:
    """The run folders below ``folder`` (not ``folder`` itself), in sorted order; a run folder's own
    subfolders are not searched, nor hidden ones (``.hydra``, the sweep's compile cache)."""
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        if is_run(child):
            yield child
        else:
            yield from runs_under(child)


def find_runs(paths: Iterable[Path], command: str) -> list[Path]:
    """The run folders ``paths`` stand for, each once, in the order given: a run folder is itself; a
    sweep, or any folder above runs, stands for the run folders below it; ``metrics.json`` or
    ``multirun.yaml`` stands for its folder. A missing path, or one with no run, raises the one-paragraph
    refusal of ``cnnbench <command>``."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CnnbenchError(
            f"{', '.join(missing)}: no such file or folder. Give `cnnbench {command}` {WHAT_TO_GIVE}."
        )
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            if path.name == METRICS_NAME:
                found.append(path.parent)
            elif path.name == MULTIRUN_RECORD:
                found += runs_under(path.parent)
        else:
            found += [path] if is_run(path) else list(runs_under(path))
    if not found:
        raise CnnbenchError(
            f"No runs found under {', '.join(str(p) for p in paths)}. Give `cnnbench {command}` "
            f"{WHAT_TO_GIVE}."
        )
    return list(dict.fromkeys(found))


# Hydra's default sweep folder name (conf/config.yaml hydra.sweep.dir): its stamp sorts by time.
SWEEP_STAMP = "%Y-%m-%d_%H-%M-%S_%f"


def latest_sweep(root: Path) -> Path | None:
    """The newest sweep folder directly under ``root`` (e.g. ``outputs/multirun``), or None if there is
    none: by the stamp in its name (when it started), else by the time its ``multirun.yaml`` was written."""
    from datetime import datetime

    def started(sweep: Path) -> float:
        try:
            return datetime.strptime(sweep.name, SWEEP_STAMP).timestamp()
        except ValueError:
            return (sweep / MULTIRUN_RECORD).stat().st_mtime

    try:
        sweeps = [p for p in Path(root).iterdir() if p.is_dir() and is_sweep(p)]
    except OSError:
        return None
    return max(sweeps, key=lambda p: (started(p), p.name), default=None)
