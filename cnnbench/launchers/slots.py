"""GPUs for the jobs of a sweep that runs several jobs at once on one machine: k jobs per GPU.

Hydra's joblib launcher (``hydra/launcher=joblib hydra.launcher.n_jobs=4``) runs a sweep's jobs in
worker processes of one machine; left alone, every job would train on ``cuda:0``. Inside such a job,
``job_device(cfg.trainer.device)`` turns ``auto``/``cuda`` into ``cuda:<k>``:

* ``k`` is a GPU with a free *slot*: an exclusive ``flock`` on ``<lock dir>/gpu-<id>.lock`` (slot 0) or
  ``gpu-<id>-<s>.lock`` (slot s >= 1), trying ``job_num % n_gpus`` first, then the next ones. Every GPU's
  slot 0 is tried before any slot 1, so the jobs spread evenly: with ``slots`` jobs per GPU, at most
  ``slots`` run on each. ``slots`` is ``ceil(hydra.launcher.n_jobs / n_gpus)`` (1 for launchers that
  run one job at a time). A lock lives as long as the job's process (or until the next job of the same
  worker process), whatever order jobs finish in.
* When every slot is taken (more jobs at once than ``slots x n_gpus``) or locks are unavailable,
  ``job_num % n_gpus``: jobs share GPUs round-robin, with a warning.
* The lock folder sits in a directory every user can write (``/tmp``), so it is the user's own: created
  with mode 0o700, and refused (a ``CnnbenchError``) when it belongs to someone else, is a symbolic link
  or can be written by others. Lock files are opened without following links and never truncated on
  opening; one that is a link, someone else's or linked twice is refused too. Otherwise another user
  could steer the jobs onto one GPU, or make a job overwrite a file of the user's through a link.

With ``hydra/launcher=gpus`` (``cnnbench.launchers.resolvers``) the launcher runs k jobs per visible GPU
at once, so each GPU has k slots. A job records how it shares its GPU, and whether NVIDIA MPS was
running (``cnnbench.launchers.mps``), in ``env.json`` (``gpu_sharing``).

Nothing changes (the requested device is returned as is) outside a Hydra multirun job, for an
explicit device (``cpu``, ``cuda:1``), with fewer than two visible GPUs (no GPU, or a launcher such as
submitit/SLURM gave the job one GPU through ``CUDA_VISIBLE_DEVICES``; the jobs of a one-GPU machine
all share ``cuda:0`` anyway), and under torchrun (each rank uses its ``LOCAL_RANK``).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no flock, round-robin only
    fcntl = None  # type: ignore[assignment]

from cnnbench.launchers import mps
from cnnbench.launchers.devices import gpu_count, visible_gpu_ids
from cnnbench.launchers.resolvers import register_resolvers

log = logging.getLogger("cnnbench")

# Where the per-GPU lock files live (default: <tmp>/cnnbench-gpus-<user id>, local to the machine).
LOCK_DIR_ENV = "CNNBENCH_GPU_LOCK_DIR"

_held: IO[str] | None = None  # the lock file of the GPU slot this process's current job holds
_sharing: dict[str, Any] | None = None  # how this process's current job shares its GPU (env.json)


def sweep_job_num() -> int | None:
    """``hydra.job.num`` inside a Hydra multirun job, else None (single runs, `cnnbench resume RUN`)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.job.get("num") is None:
        return None
    return int(hydra_cfg.job.num)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def default_lock_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"cnnbench-gpus-{uid}")


def release_gpu() -> None:
    """Give up the GPU this process holds (done automatically by the next claim and at exit)."""
    global _held
    if _held is not None:
        _held.close()  # closing the file releases the flock
        _held = None


def lock_name(gpu: str, slot: int) -> str:
    """Slot 0 keeps the one-job-per-GPU name, so jobs of older cnnbench versions still exclude it."""
    return f"gpu-{gpu}.lock" if slot == 0 else f"gpu-{gpu}-{slot}.lock"


def claim_gpu(job_num: int, count: int, lock_dir: Path | None = None, slots: int = 1) -> int:
    """The index (0..count-1) of a GPU for sweep job ``job_num``: one with a free slot (``slots`` per GPU,
    the least used GPUs first), else ``job_num % count``."""
    global _held
    release_gpu()  # this worker's previous job is over
    order = [(job_num + i) % count for i in range(count)]
    if fcntl is None:
        return order[0]
    ids = visible_gpu_ids() or []
    # Physical ids from CUDA_VISIBLE_DEVICES name the locks, so sweeps that see different GPUs
    # through different CUDA_VISIBLE_DEVICES never block each other.
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", ids[i]) if i < len(ids) else str(i) for i in range(count)]
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    try:
        if not lock_dir.is_symlink():  # a link is refused below, never created through
            lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("No GPU lock folder (%s); sweep job %d uses cuda:%d.", exc, job_num, order[0])
        return order[0]
    check_lock_dir(lock_dir)
    for slot in range(max(slots, 1)):  # every GPU's slot 0 first: the jobs spread evenly
        for index in order:
            handle = _lock(lock_dir / lock_name(names[index], slot))
            if handle is not None:
                _held = handle
                _set_sharing(slot=slot)
                return index
    log.warning(
        "All %d GPUs are taken by other cnnbench jobs (%d job(s) per GPU, more jobs at once than that): "
        "sweep job %d shares cuda:%d. Set hydra.launcher.n_jobs to at most the number of GPUs x jobs per "
        "GPU (hydra/launcher=gpus does).",
        count,
        slots,
        job_num,
        order[0],
    )
    _set_sharing(slot=None)
    return order[0]


def _unsafe_lock_dir(why: str, lock_dir: Path, fix: str) -> Exception:
    from cnnbench.errors import CnnbenchError

    return CnnbenchError(
        f"The GPU lock folder {lock_dir} {why}, so its locks cannot be trusted: another user could steer "
        f"the sweep's jobs onto one GPU, or make a job overwrite a file of yours through a link in it. "
        f"{fix}, or set {LOCK_DIR_ENV} to a folder of your own (e.g. in your home folder), then run again."
    )


def check_lock_dir(lock_dir: Path) -> None:
    """Refuse a lock folder that is a symbolic link, someone else's, or writable by others."""
    info = os.lstat(lock_dir)
    if stat.S_ISLNK(info.st_mode):
        raise _unsafe_lock_dir("is a symbolic link", lock_dir, f"Remove the link ({lock_dir})")
    if not stat.S_ISDIR(info.st_mode):
        raise _unsafe_lock_dir("is not a folder", lock_dir, f"Remove {lock_dir}")
    if info.st_uid != os.getuid():
        raise _unsafe_lock_dir(
            f"belongs to another user (uid {info.st_uid})", lock_dir, "Have its owner (or root) remove it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = oct(stat.S_IMODE(info.st_mode))
        raise _unsafe_lock_dir(
            f"can be written by other users (mode {mode})", lock_dir, f"Run `chmod 700 {lock_dir}`"
        )


def _lock(path: Path) -> IO[str] | None:
    """An exclusive flock on ``path`` (the open file that holds it), or None if another job holds it."""
    from cnnbench.errors import CnnbenchError

    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)  # no O_TRUNC: the file may be another job's, locked
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CnnbenchError(
                f"The GPU lock file {path} is a symbolic link; a lock file is never opened through one (the "
                f"job would write into the file it points to). Remove {path}, then run again."
            ) from None
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_nlink != 1:
        os.close(fd)
        raise CnnbenchError(
            f"The GPU lock file {path} is not a plain file of yours with one name (owner uid "
            f"{info.st_uid}, {info.st_nlink} link(s)); cnnbench does not write into it. Remove {path}, "
            f"then run again."
        )
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()  # another job trains on this GPU slot
        return None
    handle.seek(0)
    handle.truncate()  # ours, and locked: the previous holder's pid goes
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def launcher_jobs() -> int | None:
    """How many jobs the sweep's launcher runs at once (``hydra.launcher.n_jobs``), or None when it does
    not say (the basic launcher: one at a time; submitit: one GPU per job)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    register_resolvers()  # n_jobs of hydra/launcher=gpus is ${cnnbench.sweep_jobs:...}
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return None
    n_jobs = int(n_jobs)
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs  # joblib: -1 = one per CPU


def slots_per_gpu(count: int) -> int:
    """Jobs per GPU for this sweep: the launcher's jobs at once spread over ``count`` GPUs (at least 1)."""
    n_jobs = launcher_jobs()
    return max(math.ceil(n_jobs / count), 1) if n_jobs and count > 0 else 1


def _set_sharing(**values: Any) -> None:
    if _sharing is not None:
        _sharing.update(values)


def sharing_record() -> dict[str, Any] | None:
    """How the current sweep job shares its GPU, for env.json: ``jobs_per_gpu`` (slots), ``gpus``,
    ``slot`` (null when it shares beyond its slots or on a one-GPU machine) and ``mps`` (the MPS control
    daemon was running). None outside a sweep job on CUDA."""
    return dict(_sharing) if _sharing is not None else None


def job_device(requested: object) -> str:
    """The device a run should train on: ``requested`` (``trainer.device``), or ``cuda:<k>`` for a job
    of a sweep that runs several jobs at once on a machine with several GPUs (see the module doc).

    Also makes ``cuda:<k>`` the current CUDA device, so code that uses the current device (bf16
    support checks, RNG state, cuDNN) looks at the job's GPU.
    """
    global _sharing
    _sharing = None
    requested = str(requested)
    if requested not in ("auto", "cuda") or under_torchrun():
        return requested
    job_num = sweep_job_num()
    if job_num is None:
        return requested
    ids = visible_gpu_ids()
    count = gpu_count()
    if count < 1:
        return requested
    slots = slots_per_gpu(count)
    _sharing = {"jobs_per_gpu": slots, "gpus": count, "slot": None, "mps": mps.mps_running()}
    if (ids is not None and len(ids) <= 1) or count < 2:  # narrowed to one GPU (SLURM, submitit) or one
        return requested
    index = claim_gpu(job_num, count, slots=slots)
    import torch

    torch.cuda.set_device(index)
    log.info(
        "Sweep job %d trains on cuda:%d (%d GPUs visible, up to %d job(s) per GPU%s).",
        job_num,
        index,
        count,
        slots,
        ", NVIDIA MPS running" if _sharing["mps"] else "",
    )
    return f"cuda:{index}"
