"""One GPU per job when a sweep runs several jobs at once on a machine with several GPUs.

Hydra's joblib launcher (``hydra/launcher=joblib hydra.launcher.n_jobs=4``) runs a sweep's jobs in
worker processes of one machine; left alone, every job would train on ``cuda:0``. Inside such a job,
``job_device(cfg.trainer.device)`` turns ``auto``/``cuda`` into ``cuda:<k>``:

* ``k`` is a GPU that no other cnnbench job on this machine holds, found by taking an exclusive
  ``flock`` on ``<lock dir>/gpu-<id>.lock``, trying ``job_num % n_gpus`` first, then the next ones.
  The lock lives as long as the job's process (or until the next job of the same worker process),
  so with ``n_jobs <= n_gpus`` concurrent jobs never share a GPU, whatever order jobs finish in.
* When every GPU is taken (more jobs at once than GPUs) or locks are unavailable, ``job_num % n_gpus``:
  jobs share GPUs round-robin.

Nothing changes (the requested device is returned as is) outside a Hydra multirun job, for an
explicit device (``cpu``, ``cuda:1``), with fewer than two visible GPUs (no GPU, or a launcher such as
submitit/SLURM gave the job one GPU through ``CUDA_VISIBLE_DEVICES``), and under torchrun (each rank
uses its ``LOCAL_RANK``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock, round-robin only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cnnbench")

# Where the per-GPU lock files live (default: <tmp>/cnnbench-gpus-<user id>, local to the machine).
LOCK_DIR_ENV = "CNNBENCH_GPU_LOCK_DIR"

_held: IO[str] | None = None  # the lock file of the GPU this process's current job holds


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


def visible_gpu_ids() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices or UUIDs), or None when it is not set."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_lock_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"cnnbench-gpus-{uid}")


def release_gpu() -> None:
    """Give up the GPU this process holds (done automatically by the next claim and at exit)."""
    global _held
    if _held is not None:
        _held.close()  # closing the file releases the flock
        _held = None


def claim_gpu(job_num: int, count: int, lock_dir: Path | None = None) -> int:
    """The index (0..count-1) of a GPU for sweep job ``job_num``: a free one, else ``job_num % count``."""
    global _held
    release_gpu()  # this worker's previous job is over
    order = [(job_num + i) % count for i in range(count)]
    if fcntl is None:
        return order[0]
    ids = visible_gpu_ids() or []
    # Physical ids from CUDA_VISIBLE_DEVICES name the locks, so sweeps that see different GPUs
    # through different CUDA_VISIBLE_DEVICES never block each other.
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", ids[i]) if i < len(ids) else str(i) for i in range(count)]
    try:
        lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("No GPU lock folder (%s); sweep job %d uses cuda:%d.", exc, job_num, order[0])
        return order[0]
    for index in order:
        try:
            handle = open(lock_dir / f"gpu-{names[index]}.lock", "a+")  # noqa: SIM115 (held past return)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()  # another job trains on this GPU
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held = handle
        return index
    log.warning(
        "All %d GPUs are taken by other cnnbench jobs (more jobs at once than GPUs): sweep job %d "
        "shares cuda:%d. Set hydra.launcher.n_jobs to at most the number of GPUs.",
        count,
        job_num,
        order[0],
    )
    return order[0]


def job_device(requested: object) -> str:
    """The device a run should train on: ``requested`` (``trainer.device``), or ``cuda:<k>`` for a job
    of a sweep that runs several jobs at once on a machine with several GPUs (see the module doc).

    Also makes ``cuda:<k>`` the current CUDA device, so code that uses the current device (bf16
    support checks, RNG state, cuDNN) looks at the job's GPU.
    """
    requested = str(requested)
    if requested not in ("auto", "cuda") or under_torchrun():
        return requested
    ids = visible_gpu_ids()
    if ids is not None and len(ids) <= 1:  # narrowed to one GPU (SLURM, submitit) or none
        return requested
    job_num = sweep_job_num()
    if job_num is None:
        return requested
    count = gpu_count()
    if count < 2:
        return requested
    index = claim_gpu(job_num, count)
    import torch

    torch.cuda.set_device(index)
    log.info("Sweep job %d trains on cuda:%d (%d GPUs visible).", job_num, index, count)
    return f"cuda:{index}"
