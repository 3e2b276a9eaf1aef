"""The GPU check's measurement of the fastest number of jobs per GPU, cached per GPU model.

``benchmarks/gpu_check.sh`` writes it (``$CNNBENCH_CACHE/jobs_per_gpu.json``) for each sharing mechanism
it measured; ``CNNBENCH_JOBS_PER_GPU=auto`` reads it back for this machine's GPU model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.launchers import mps as mps_daemon
from cnnbench.launchers.devices import gpu_count, visible_gpu_ids

JOBS_CACHE_FILE = "jobs_per_gpu.json"  # in cnnbench.core.cache.cache_dir(), written by the GPU check
MECHANISMS = ("processes", "mps")  # how k jobs share a GPU: plain processes, or processes under MPS


def device_model() -> str:
    """The name the jobs-per-GPU measurement is cached under: the first visible GPU's model (NVML's
    name, as nvidia-smi and torch report it), or ``cpu`` on a machine without a GPU."""
    name = _nvidia_smi_name()
    if name:
        return name
    if gpu_count() > 0:
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"


def _nvidia_smi_name() -> str | None:
    """The first visible GPU's name from nvidia-smi: no CUDA context in the launching process."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    ids = visible_gpu_ids()
    if ids is not None and not ids:
        return None
    command = [smi, "--query-gpu=name", "--format=csv,noheader"]
    if ids:
        command += ["-i", ids[0]]  # nvidia-smi ignores CUDA_VISIBLE_DEVICES: ask for its first entry
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if result.returncode == 0 and lines else None


def jobs_cache_path() -> Path:
    from cnnbench.core.cache import cache_dir

    return cache_dir() / JOBS_CACHE_FILE


def read_jobs_record(model: str | None = None) -> dict[str, Any] | None:
    """The GPU check's jobs-per-GPU measurement for ``model`` (default: this machine's), or None."""
    try:
        data = json.loads(jobs_cache_path().read_text())
    except (OSError, ValueError):
        return None
    entry = (data.get("entries") or {}).get(model or device_model()) if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else None


def measured_jobs_per_gpu(mps: bool | None = None) -> int | None:
    """The measured best k for this GPU model: under MPS when its daemon runs (and was measured)."""
    entry = read_jobs_record()
    if not entry:
        return None
    mps = mps_daemon.mps_running() if mps is None else mps
    best = (entry.get("mps") if mps else None) or entry.get("processes")
    try:
        return max(int(best["jobs_per_gpu"]), 1) if best else None
    except (KeyError, TypeError, ValueError):
        return None


def write_jobs_record(model: str, measured: dict[str, Any]) -> Path:
    """Store the GPU check's measurement for ``model``: ``{mechanism: {"jobs_per_gpu": k, ...}}`` for
    the mechanisms of ``MECHANISMS`` that were measured, plus anything else worth keeping."""
    from cnnbench.core.cache import locked, read_json, write_json

    path = jobs_cache_path()
    with locked(path):
        data = read_json(path)
        entry = {**measured, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        data.setdefault("entries", {})[model] = entry
        write_json(path, data)
    return path
