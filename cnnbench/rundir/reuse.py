"""Never train the same run twice: a job whose identity matches a completed run is filled from it.

The rules (docs/reuse.md):

- A job looks for runs of its identity (``rundir/identity.py``) under the *outputs root*: ``reuse.store``
  when set, else the folder its run and sweep folders share (``outputs/`` by default), else the folder
  above its own sweep (or run) folder.
- A *completed* match is reused (``rundir/reuse_fill.py``): nothing is trained. A match that diverged,
  failed or was interrupted is not (the job's log says so) and the job trains.
- A match in progress (its run.lock held by training, or the identity's claim held by another job that
  is about to train it) is waited for, up to ``reuse.wait_s`` seconds, polling; then reused if it
  completed, trained here if it ended otherwise, and the job is refused, naming the folder, if it is
  still running. One process at a time trains an identity: the claim
  (``<root>/.cnnbench-index/v1/<identity>/run.lock``, a record lock as run.lock) is held from the
  decision to train until the run ends.
- ``reuse.mode=never`` trains again on purpose. A folder that already holds a run (a continuation,
  ``trainer.resume``) and ``cnnbench resume`` are never touched by reuse.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import CHECKPOINT_NAME, holds_run, read_metrics
from cnnbench.rundir.identity import Identity, identity_of, recorded_identity, write_identity
from cnnbench.rundir.index import INDEX_NAME, identity_folder, register, runs_with, unregister
from cnnbench.rundir.lock import HELD, FolderBusy, acquire, probe
from cnnbench.rundir.reuse_fill import duration, fill_from

log = logging.getLogger("cnnbench")

REUSE_MODES = ("auto", "never")
POLL_S = 10.0


@dataclass(frozen=True)
class ReuseSettings:
    mode: str = "auto"
    store: Path | None = None
    wait_s: float = 86400.0


def settings_of(cfg: Any) -> ReuseSettings:
    """The ``reuse`` section (configs saved before it existed: the defaults)."""
    section = cfg.get("reuse") if hasattr(cfg, "get") else None
    if not section:
        return ReuseSettings()
    store = section.get("store")
    return ReuseSettings(
        mode=str(section.get("mode", "auto")),
        store=Path(str(store)).expanduser() if store else None,
        wait_s=float(section.get("wait_s", 86400.0)),
    )


def _fixed_prefix(pattern: str) -> Path | None:
    """The leading folders of a folder pattern before its first interpolation (``outputs`` for
    ``outputs/${model.name}${depth}/${now:...}``); for a pattern without one, the folder above it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if "${" in part:
            break
        fixed.append(part)
    else:
        fixed = fixed[:-1]
    return Path(*fixed) if fixed else None


def outputs_root(
    run_pattern: str, sweep_pattern: str, own_folder: Path, cwd: Path, store: Path | None = None
) -> Path:
    """Where a job looks for runs of its identity (``own_folder``: its sweep folder, or its run folder)."""
    if store is not None:
        return store if store.is_absolute() else cwd / store
    prefixes = [_fixed_prefix(p) for p in (run_pattern, sweep_pattern)]
    absolute = [cwd / p for p in prefixes if p is not None]
    own = own_folder if own_folder.is_absolute() else cwd / own_folder
    if len(absolute) == 2:
        common = Path(os.path.commonpath([str(absolute[0]), str(absolute[1])]))
        if common in absolute and (common == own or common in own.parents):
            return common
    return own.parent


@dataclass
class Survey:
    """The runs of one identity, other than the job's own folder, by what they mean for it."""

    completed: list[Path] = field(default_factory=list)
    running: list[Path] = field(default_factory=list)
    unusable: list[tuple[Path, str]] = field(default_factory=list)  # (folder, status)


def survey(root: Path, digest: str, own: Path) -> Survey:
    found = Survey()
    own = own.resolve()
    for run_dir in runs_with(root, digest):
        if run_dir.resolve() == own:
            continue
        status = (read_metrics(run_dir) or {}).get("status")
        lock = probe(run_dir)
        training = lock.state == HELD and (lock.holder is None or lock.holder.command in (None, "train"))
        if status == "completed" and (run_dir / CHECKPOINT_NAME).is_file():
            found.completed.append(run_dir)
        elif training:
            found.running.append(run_dir)
        else:
            found.unusable.append((run_dir, str(status or "never started")))
    # The one that trained it first: an original rather than a reused copy.
    found.completed.sort(key=lambda p: (p / "reused.json").exists())
    return found


@dataclass
class Outcome:
    """What the job does: ``metrics`` of the reused run (train nothing), or None (train)."""

    identity: Identity
    root: Path | None
    metrics: dict[str, Any] | None = None
    source: Path | None = None


def _try_claim(root: Path, digest: str):
    folder = identity_folder(root, digest)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return acquire(folder, "train")
    except FolderBusy:
        return None


def _refusal(run_dir: Path, running: list[Path], wait_s: float) -> CnnbenchError:
    where = ", ".join(map(str, running)) or "another job (it is about to train it)"
    return CnnbenchError(
        f"A run with the same settings as {run_dir} is being trained in {where}; it was not trained a "
        f"second time (waited {duration(wait_s)}, reuse.wait_s). Nothing was trained here. Run the same "
        f"command again when it has finished (this job then reuses it), raise reuse.wait_s to wait longer, "
        f"or set reuse.mode=never to train it again anyway."
    )


@contextmanager
def reuse_or_train(cfg: Any, run_dir: Path, root: Path | None) -> Iterator[Outcome]:
    """Decide for the job in ``run_dir``: yields an ``Outcome`` with the reused metrics, or one to train
    (holding the identity's claim until the block ends). ``root`` None: reuse is off (torchrun).

    A job refused before its run started (a bad value found while building it, a run in progress that
    it waited for in vain) leaves the index as it found it, as it leaves no run folder."""
    index_existed = root is None or (Path(root) / INDEX_NAME).exists()
    try:
        with _reuse_or_train(cfg, run_dir, root) as outcome:
            yield outcome
    finally:
        if root is not None and not holds_run(Path(run_dir)):
            unregister(root, run_dir, identity_of(cfg).digest)
            if not index_existed:
                # Made by this call alone, a moment ago; deleting it races only with a job that started
                # in this brand-new outputs root at the same moment.
                shutil.rmtree(Path(root) / INDEX_NAME, ignore_errors=True)


@contextmanager
def _reuse_or_train(cfg: Any, run_dir: Path, root: Path | None) -> Iterator[Outcome]:
    settings = settings_of(cfg)
    identity = identity_of(cfg)
    run_dir = Path(run_dir)
    continuing = holds_run(run_dir)
    if run_dir.is_dir() and recorded_identity(run_dir) is None:
        write_identity(run_dir, identity)
    if root is None or continuing or settings.mode == "never":
        if settings.mode == "never" and not continuing:
            log.info(
                "reuse.mode=never: training %s again even if a run of its identity exists.", identity.short
            )
        with _registered(root, run_dir, identity):
            yield Outcome(identity, root)
        return
    try:
        claim, found = _decide(root, identity, run_dir, settings.wait_s)
    except OSError as exc:  # an outputs root this job cannot write into: no index, no claim
        log.warning("Not looking for a run to reuse under %s (%s); training.", root, exc.strerror or exc)
        yield Outcome(identity, None)
        return
    if found.completed:
        source = found.completed[0]
        metrics = fill_from(run_dir, source, identity.digest)
        with suppress(OSError):
            register(root, run_dir, identity.digest, status=metrics.get("status"), reused_from=str(source))
        log.info(
            "Reused %s (identity %s, trained there in %s): nothing trained; its results are in %s.",
            source, identity.short, duration(float(metrics.get("elapsed_seconds") or 0.0)), run_dir,
        )  # fmt: skip
        yield Outcome(identity, root, metrics, source)
        return
    for folder, status in found.unusable:
        log.info("Not reused: %s has the same identity but is %s; training here.", folder, status)
    try:
        with _registered(root, run_dir, identity):
            yield Outcome(identity, root)
    finally:
        claim.release()


def _decide(root: Path, identity: Identity, run_dir: Path, wait_s: float) -> tuple[Any, Survey]:
    """Wait while a run of this identity is in progress (up to ``wait_s``); then the survey, and the
    identity's claim when there is no completed run to reuse (the caller trains holding it)."""
    deadline, announced = time.monotonic() + wait_s, False
    while True:
        claim = _try_claim(root, identity.digest)
        found = survey(root, identity.digest, run_dir)
        if found.completed:
            if claim is not None:
                claim.release()
            return None, found
        if claim is not None and not found.running:
            return claim, found
        if claim is not None:
            claim.release()
        left = deadline - time.monotonic()
        if left <= 0:
            raise _refusal(run_dir, found.running, wait_s)
        if not announced:
            where = ", ".join(map(str, found.running)) or "another job"
            log.info("A run of identity %s is being trained in %s: waiting for it.", identity.short, where)
            announced = True
        time.sleep(min(POLL_S, max(0.05, wait_s / 20), left))


@contextmanager
def _registered(root: Path | None, run_dir: Path, identity: Identity) -> Iterator[None]:
    """The job's index entry: written when it starts (others see it running) and when it ends."""
    if root is not None:
        try:
            register(root, run_dir, identity.digest, status="running")
        except OSError as exc:  # the index is a cache: a read-only or full outputs root trains anyway
            log.warning("Could not write the run index under %s (%s).", root, exc.strerror or exc)
    try:
        yield
    finally:
        if root is not None:
            metrics = read_metrics(run_dir) or {}
            try:
                register(
                    root, run_dir, identity.digest,
                    status=metrics.get("status"), elapsed_seconds=metrics.get("elapsed_seconds"),
                )  # fmt: skip
            except OSError as exc:  # the index is a cache: a full disk must not hide the run's own end
                log.warning("Could not update the run index (%s).", exc.strerror or exc)
