"""Whether NVIDIA MPS runs: it lets the processes of k jobs on one GPU run their kernels at the same time
(``nvidia-cuda-mps-control -d``, started by the user); a job records it in env.json (``gpu_sharing``)."""

from __future__ import annotations

import os
from pathlib import Path

MPS_PIPE_ENV, MPS_DEFAULT_PIPE = "CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"


def mps_running(proc: Path = Path("/proc")) -> bool:
    """Whether an NVIDIA MPS control daemon (or server) runs on this machine.

    Its processes are named ``nvidia-cuda-mps-control`` / ``-server`` (``comm`` keeps 15 characters);
    where /proc shows no other processes (containers), its control pipe is the sign.
    """
    try:
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().startswith("nvidia-cuda-mps"):
                        return True
                except OSError:
                    continue
    except OSError:
        pass
    pipe = Path(os.environ.get(MPS_PIPE_ENV) or MPS_DEFAULT_PIPE) / "control"
    return pipe.exists()
