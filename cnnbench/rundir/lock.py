"""One process per run folder: a POSIX record lock on the folder's ``run.lock``.

The process that writes into a run folder (training, `cnnbench eval`, `cnnbench export`) holds an
exclusive lock on ``run.lock`` for as long as it writes, and writes its pid, host name, start time (ISO,
UTC), command and scheduler job id into the file, so that a command refused by the lock can name it.
Anyone may ask who holds a folder (``probe``): `cnnbench status` shows it, and the check that runs before
Hydra writes ``.hydra/`` (``refuse_if_held``, from ``continuation.decide``) refuses a second start.

What it relies on:

- *POSIX record locks* (``fcntl.lockf``, i.e. ``fcntl(F_SETLK)``), not ``flock``: they are the locks
  network file systems carry between machines. NFSv3 through the NLM lock manager (``lockd``/``statd``
  running, the share not mounted with ``nolock``, which keeps locks local to one client), NFSv4 in the
  protocol itself. Lustre needs the ``flock`` mount option (``localflock`` locks per node only). GPFS,
  BeeGFS and CephFS support them.
- *The kernel releases the lock when the holder dies*, however it dies (SIGKILL, OOM killer): a dead
  holder never blocks a folder. A crashed *machine* holding a lock on NFS releases it when its lease
  expires (NFSv4, 90 s by default) or, on NFSv3, when the machine comes back and its ``statd``
  notifies the server.
- *Locks belong to a process*, and closing any descriptor of the file drops all of that process's locks
  on it. So this process never opens a lock file it holds: ``_held`` remembers them, and a probe of a
  folder this process holds answers from there. Child processes do not inherit the lock.
- Where the file system has no record locks (``ENOLCK``, ``ENOSYS``, ``EOPNOTSUPP``), the command runs
  without the lock, with one warning (in train.log when training), rather than refusing to work.

The lock file is never deleted (deleting a lock file races with a process that just opened it); a clean
release empties it. A probe takes a shared lock and releases it at once; an acquisition that meets one
tries again for a moment before it refuses.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import LOCK_NAME

try:
    import fcntl
except ImportError:  # Windows: no record locks; commands run without them
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cnnbench")

# errno values that mean "this file system has no (working) record locks", not "someone holds it".
NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
# What F_SETLK answers when another process holds a conflicting lock (POSIX allows either).
TAKEN = frozenset({errno.EAGAIN, errno.EACCES})
# A probe holds its shared lock for microseconds: an acquisition that meets one tries again meanwhile.
RETRIES, RETRY_S = 5, 0.05

HELD, FREE, UNKNOWN = "held", "free", "unknown"
WHAT = {
    "train": "is being trained",
    "eval": "is being evaluated (`cnnbench eval` writes its results into it)",
    "export": "is being exported (`cnnbench export` writes into it)",
}

_held: dict[tuple[int, int], RunLock] = {}  # (st_dev, st_ino) of the lock files this process holds
_held_guard = threading.Lock()


def _forget_in_child() -> None:
    # A forked child holds none of its parent's locks (they belong to a process), and the guard may have
    # been taken by a parent thread that does not exist in the child.
    global _held_guard
    _held.clear()
    _held_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder, as its lock file says (any field may be missing in a damaged file)."""

    pid: int | None = None
    host: str | None = None
    since: str | None = None  # ISO 8601, UTC
    command: str | None = None  # train, eval, export
    job_id: str | None = None  # the scheduler's id (SLURM job, torchrun run), when there is one

    @classmethod
    def now(cls, command: str, job_id: str | None = None) -> Holder:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), since, command, job_id)

    @classmethod
    def parse(cls, text: str) -> Holder:
        try:
            data = json.loads(text.splitlines()[0]) if text.strip() else {}
        except (json.JSONDecodeError, IndexError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            **{k: str(data[k]) for k in ("host", "since", "command", "job_id") if data.get(k) is not None},
        )

    def text(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``pid 1234 on host node7 since 2026-05-01T10:00:00+00:00 (job 5512)``, as far as known."""
        if self.pid is None and self.host is None:
            return "another process (its run.lock does not say which)"
        parts = [f"pid {self.pid}" if self.pid is not None else "a process"]
        if self.host:
            parts.append(f"on host {self.host}")
        if self.since:
            parts.append(f"since {self.since}")
        if self.job_id:
            parts.append(f"(job {self.job_id})")
        return " ".join(parts)

    def how_to_stop(self) -> str:
        kill = f"`kill {self.pid}`" if self.pid is not None else "stop that process"
        if self.host and self.host != socket.gethostname():
            kill += f" on {self.host}"
        if self.job_id and not self.job_id.startswith("torchrun:"):
            kill += f", or `scancel {self.job_id}`"
        return kill


@dataclass(frozen=True)
class Probe:
    """``held`` (by ``holder``), ``free``, or ``unknown``: no run.lock (runs of older versions), a file
    system without record locks, or a lock file that cannot be opened."""

    state: str
    holder: Holder | None = None
    mine: bool = False  # held by this very process


class FolderBusy(CnnbenchError):
    """Another process writes into the run folder."""


def busy_error(run_dir: Path, holder: Holder | None, mine: bool = False) -> FolderBusy:
    holder = holder or Holder()
    what = WHAT.get(holder.command or "", "is in use by another cnnbench command")
    if mine:
        return FolderBusy(
            f"{run_dir} {what} by this same process (pid {os.getpid()}, since {holder.since}), e.g. in "
            f"another thread or notebook cell; one process at a time writes into a run folder, so nothing "
            f"was changed. Wait for that call to finish, or give this one another folder."
        )
    after = f"; a stopped run continues with `cnnbench resume {run_dir}`" if holder.command == "train" else ""
    return FolderBusy(
        f"{run_dir} {what} by {holder.describe()}; one process at a time writes into a run folder, so "
        f"nothing was changed. Wait for it to finish, or stop it ({holder.how_to_stop()}) and run this "
        f"command again{after}. A process that dies releases the folder by itself."
    )


class RunLock:
    """The held lock of one run folder (``locked`` False: the file system has none; nothing is held)."""

    def __init__(self, path: Path, fd: int | None, holder: Holder, key: tuple[int, int] | None) -> None:
        self.path, self.holder = path, holder
        self._fd, self._key = fd, key
        self._times: tuple[int, int] | None = None  # the file's (atime, mtime) before it named this holder

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _held_guard:
            _held.pop(self._key, None)  # type: ignore[arg-type]
            try:
                os.ftruncate(fd, 0)  # a released lock names nobody
                if self._times is not None:
                    # Emptied as it was found, it keeps its times too: `cnnbench eval` and `export` change
                    # nothing of the folder but their own files, for anyone comparing it before and after.
                    os.utime(fd, ns=self._times)
            except OSError:
                pass
            finally:
                os.close(fd)  # releases the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_flags(write: bool) -> int:
    flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
    return flags | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _read_holder(fd: int) -> Holder:
    try:
        return Holder.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    except OSError:
        return Holder()


def _mine(path: Path) -> RunLock | None:
    """This process's lock of ``path``, if it holds it (call with ``_held_guard`` held)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _held.get((st.st_dev, st.st_ino))


def probe(run_dir: Path) -> Probe:
    """Who holds ``run_dir``, without changing anything (read-only: a shared lock, released at once)."""
    path = Path(run_dir) / LOCK_NAME
    # Under the guard: closing our descriptor while another thread of this process holds the lock would
    # release that thread's lock.
    with _held_guard:
        held_here = _mine(path)
        if held_here is not None:
            return Probe(HELD, held_here.holder, mine=True)
        if fcntl is None:
            return Probe(UNKNOWN)
        try:
            fd = os.open(path, _open_flags(write=False))
        except OSError:
            return Probe(UNKNOWN)  # no run.lock (a run of an older version), or not readable
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                return Probe(HELD, _read_holder(fd)) if exc.errno in TAKEN else Probe(UNKNOWN)
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return Probe(FREE)
        finally:
            os.close(fd)


def refuse_if_held(run_dir: Path) -> None:
    """Raise ``FolderBusy`` when another process holds ``run_dir`` (a peek: ``acquire`` decides)."""
    found = probe(run_dir)
    if found.state == HELD and not found.mine:
        raise busy_error(Path(run_dir), found.holder)


def acquire(run_dir: Path, command: str, job_id: str | None = None) -> RunLock:
    """Hold ``run_dir`` for ``command`` (train, eval, export) or raise ``FolderBusy`` naming the holder.

    Creates the folder and its run.lock if needed. Without record locks on this file system, returns an
    unlocked ``RunLock`` after one warning.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    holder = Holder.now(command, job_id)
    with _held_guard:
        held_here = _mine(path)
        if held_here is not None:
            raise busy_error(run_dir, held_here.holder, mine=True)
        if fcntl is None:
            return _unlocked(path, holder, "this platform has no POSIX record locks")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _open_flags(write=True), 0o644)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise CnnbenchError(
                f"Cannot open the run folder's lock file {path} ({why}). cnnbench locks the folder so that "
                f"one process at a time writes into it; make the folder writable (and {LOCK_NAME} a plain "
                f"file: remove it if it is anything else), then run the command again."
            ) from None
        problem = _lock_exclusive(fd)
        if problem is not None:
            owner = _read_holder(fd)
            os.close(fd)
            if problem.errno in NO_LOCKS:
                return _unlocked(path, holder, problem.strerror or str(problem))
            if problem.errno in TAKEN:
                raise busy_error(run_dir, owner)
            raise CnnbenchError(
                f"Cannot lock {path} ({problem.strerror or problem}); cnnbench locks a run folder so that "
                f"one process at a time writes into it. Check the folder's file system, then run the "
                f"command again."
            )
        st = os.fstat(fd)
        lock = RunLock(path, fd, holder, (st.st_dev, st.st_ino))
        if st.st_size == 0 and os.utime in os.supports_fd:
            lock._times = (st.st_atime_ns, st.st_mtime_ns)
        _held[(st.st_dev, st.st_ino)] = lock
    try:
        data = holder.text().encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)  # an NFS client sends it now, so another machine's probe reads this holder
    except OSError as exc:  # a full disk: the lock holds all the same, it just names nobody
        log.warning("Could not write the holder into %s (%s).", path, exc.strerror or exc)
    return lock


def _lock_exclusive(fd: int) -> OSError | None:
    """Take the exclusive lock (None), or the error of the last try."""
    for attempt in range(RETRIES):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except OSError as exc:
            if exc.errno not in TAKEN or attempt == RETRIES - 1:
                return exc
            time.sleep(RETRY_S)  # a probe's shared lock lasts microseconds
    return None


def _unlocked(path: Path, holder: Holder, why: str) -> RunLock:
    log.warning(
        "Cannot lock %s (%s): the file system has no POSIX record locks (Lustre needs the flock mount "
        "option; NFS needs lockd, or NFSv4). Going on without the lock: nothing stops a second process "
        "from writing into this run folder at the same time.",
        path,
        why,
    )
    return RunLock(path, None, holder, None)


@contextmanager
def holding(run_dir: Path, command: str, job_id: str | None = None, enabled: bool = True) -> Iterator[None]:
    """``acquire`` on entry (unless not ``enabled``: e.g. torchrun's ranks other than 0), release on exit,
    however the block ends."""
    if not enabled:
        yield
        return
    lock = acquire(run_dir, command, job_id)
    try:
        yield
    finally:
        lock.release()
