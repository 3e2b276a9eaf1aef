"""``${cnnbench.sweep_jobs:K}``: the ``n_jobs`` of ``hydra/launcher=gpus``, k jobs per visible GPU.

``hydra/launcher=gpus`` (conf/hydra/launcher/gpus.yaml) is the joblib launcher with ``n_jobs`` = k x the
visible GPUs, k from ``CNNBENCH_JOBS_PER_GPU``: a number, or ``auto`` (the default) = what
``benchmarks/gpu_check.sh`` measured fastest on this GPU model (``cnnbench.launchers.measured``), else 1.
The nets are small (0.27-1.7 M parameters), so one job leaves a large GPU mostly idle; several processes
fill it. NVIDIA MPS (``cnnbench.launchers.mps``) lets those processes' kernels run at the same time
instead of time-sliced.
"""

from __future__ import annotations

from cnnbench.launchers.devices import gpu_count
from cnnbench.launchers.measured import measured_jobs_per_gpu

# k in `hydra/launcher=gpus`: a number of jobs per GPU, or auto (measured by the GPU check, else 1).
JOBS_PER_GPU_ENV = "CNNBENCH_JOBS_PER_GPU"
SWEEP_JOBS_RESOLVER = "cnnbench.sweep_jobs"  # hydra.launcher.n_jobs of conf/hydra/launcher/gpus.yaml


def register_resolvers() -> None:
    """Register ``${cnnbench.sweep_jobs:K}`` (idempotent): conf/hydra/launcher/gpus.yaml's ``n_jobs``.

    Launchers resolve ``n_jobs`` in the process that launches the sweep, and a job reads it back
    (``slots_per_gpu``) in its own: both import cnnbench.commands.app, which calls this.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(SWEEP_JOBS_RESOLVER):
        OmegaConf.register_new_resolver(SWEEP_JOBS_RESOLVER, sweep_jobs)


def sweep_jobs(setting: object = "auto") -> int:
    """Jobs at once for ``hydra/launcher=gpus``: k (``setting``) per visible GPU; k on a machine without."""
    return jobs_per_gpu(setting) * max(gpu_count(), 1)


def jobs_per_gpu(setting: object = "auto") -> int:
    """k from ``CNNBENCH_JOBS_PER_GPU``'s value: a positive number, or ``auto`` (measured, else 1)."""
    from cnnbench.errors import CnnbenchError

    text = str(setting).strip().lower()
    if text in ("", "auto"):
        return measured_jobs_per_gpu() or 1
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise CnnbenchError(
            f"{JOBS_PER_GPU_ENV}={setting!r} must be a positive number of jobs per GPU, or auto (what "
            f"benchmarks/gpu_check.sh measured fastest on this GPU model, else 1)."
        )
    return k
