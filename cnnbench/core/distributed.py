"""torch.distributed for one run over several processes (`torchrun --nproc_per_node=N -m cnnbench train`).

NCCL on GPUs, gloo on CPUs. The global batch stays ``trainer.batch_size``: every rank draws the same
shuffled order and takes its own slice of each global batch. Only rank 0 logs, writes metrics and
checkpoints. All ranks agree on the run folder through ``CNNBENCH_RUN_STAMP`` (rank 0's time stamp).
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import torch
import torch.distributed as dist

STAMP_ENV = "CNNBENCH_RUN_STAMP"


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    """This process's place in a torchrun (or srun with torchrun's variables) launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext) -> None:
    """Join the process group (idempotent); NCCL when this rank has a GPU, gloo otherwise."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = os.environ.get("CNNBENCH_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend=backend)
    atexit.register(_release_at_exit)


def share_run_stamp(ctx: DistContext) -> None:
    """Rank 0's time stamp in every rank's environment, so all ranks resolve the same run folder.

    Restarted workers (torchrun ``--max-restarts``) get the stamp of the first attempt of the same
    torchrun launch (``TORCHELASTIC_RUN_ID``), so they continue the run in its folder.
    """
    if not ctx.enabled or os.environ.get(STAMP_ENV):
        return
    stamp = [_launch_stamp() if ctx.is_main else None]
    dist.broadcast_object_list(stamp, src=0)
    os.environ[STAMP_ENV] = stamp[0]


def _launch_stamp() -> str:
    now = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or run_id == "none":
        return now
    from cnnbench.core.cache import cache_dir

    record = cache_dir() / "torchrun" / f"{run_id}.stamp"
    try:
        return record.read_text().strip() or now
    except OSError:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(now + "\n")
        return now


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce when distributed; a no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _release_at_exit() -> None:
    """Free what still holds the process group while the interpreter is fully alive (an atexit hook).

    ``destroy_process_group`` only drops torch.distributed's own references: a DistributedDataParallel
    model keeps the gloo backend alive through its reducer. If that model outlives the run (a reference
    cycle, an exception's traceback, a global), it is freed during interpreter finalization, where tearing
    down gloo's threads sometimes aborts the process ("terminate called without an active exception",
    SIGABRT): the run completed and wrote its files, yet torchrun reports the rank as failed.
    """
    shutdown()
    gc.collect()
