"""The run folder's small files: metrics.json (the run's state for people and tools) and env.json."""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import subprocess
import sys
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError

# The run folder's files (docs/design-sketch.md); every module names them through these constants.
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.prev.pt"  # the one before: kept until the new one is durable
BEST_CHECKPOINT_NAME = "best.pt"  # the weights with the best validation error (runs with data.val_size)
METRICS_NAME = "metrics.json"
ENV_NAME = "env.json"
LOG_NAME = "train.log"
LOCK_NAME = "run.lock"  # held by the one process that writes into the folder (rundir/lock.py)
SAVED_CONFIG = Path(".hydra") / "config.yaml"  # Hydra's record of the composed config
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"
MULTIRUN_RECORD = "multirun.yaml"  # Hydra's record of a sweep, in the sweep folder
# metrics.json "status", in the order reports list them.
STATUSES = ("completed", "running", "interrupted", "diverged", "failed")


def holds_run(folder: Path) -> bool:
    return (folder / CHECKPOINT_NAME).exists() or (folder / METRICS_NAME).exists()


def existing_run_error(folder: Path) -> Exception:
    """The refusal to train into a folder that holds a run (results are never overwritten)."""
    return CnnbenchError(
        f"{folder} already holds a run (checkpoint.pt or metrics.json); cnnbench never overwrites "
        f"results. Continue it with `cnnbench resume {folder}`, or train into a new folder (drop "
        f"hydra.run.dir=... or choose another one)."
    )


# A write that finds no room: a full disk, a used-up quota, or the file-size limit (`ulimit -f`). The same
# command succeeds once there is room, so it exits with 75 (EX_TEMPFAIL: try again later).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# A folder this user cannot write into: a read-only file system, or permissions. Nothing waits it out, so
# a command that finds one before it did anything exits with 2, as for any refusal.
READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
NO_ROOM_EXIT = 75
_NO_ROOM_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file-size limit (`ulimit -f`) is reached",
}


class NotWritten(CnnbenchError):
    """A file that could not be written for lack of room: the command can succeed later (exit 75)."""

    exit_code = NO_ROOM_EXIT


def os_error_of(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or while handling (``torch.save``
    reports a failed write as the RuntimeError of its clean-up, with the OSError as context)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def no_room(exc: BaseException) -> bool:
    error = os_error_of(exc)
    return error is not None and error.errno in NO_ROOM


def write_failure(exc: OSError) -> str:
    """Why a write failed, for a message: ``File too large: the file-size limit (`ulimit -f`) is reached``."""
    why = exc.strerror or str(exc)
    return f"{why}: {_NO_ROOM_WHY[exc.errno]}" if exc.errno in NO_ROOM else why


def write_error(path: Path, exc: OSError, consequence: str, fix: str) -> CnnbenchError:
    """The one paragraph for ``path`` not written. No room: ``NotWritten`` (exit 75), whose fix is room and
    the same command again. Anything else (a read-only folder, permissions): exit 2 with ``fix``."""
    if exc.errno in NO_ROOM:
        return NotWritten(
            f"Could not write {path} ({write_failure(exc)}). {consequence} Free space (or raise the quota or "
            f"the file-size limit), then run the same command again."
        )
    return CnnbenchError(f"Could not write {path} ({write_failure(exc)}). {consequence} {fix}")


def write_atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` writes the file under a temporary name beside ``path``, which then takes its place:
    a failed write (a full disk) leaves the earlier ``path``, if any, as it was and no temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            write(tmp)
        except Exception as exc:
            # torch.save, torch.jit.save...: a failed write surfaces as the writer's own clean-up error.
            error = os_error_of(exc)
            if error is None or error is exc:
                raise
            raise error from None
        os.replace(tmp, path)
    finally:
        discard(tmp)


def discard(tmp: Path) -> None:
    """Remove a temporary file if it is there. Quietly: on a read-only file system even a file that was
    never created cannot be unlinked (EROFS), and that must not hide the write's own error."""
    with suppress(OSError):
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_env(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / ENV_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# The command line as typed (`cnnbench train -m ...`), JSON, set by the CLI: Hydra's sys.argv lacks `train`.
LAUNCH_ENV = "CNNBENCH_LAUNCH"


def launched_with() -> list[str]:
    """The command line that started this process's work, as the user typed it."""
    try:
        argv = json.loads(os.environ.get(LAUNCH_ENV, ""))
    except json.JSONDecodeError:
        argv = None
    return argv if isinstance(argv, list) else list(sys.argv)


def rerun_command() -> str:
    """A shell command that trains this run again as written: `cnnbench train` and the job's overrides
    (for a sweep job, its own values, not the sweep's lists)."""
    import shlex

    overrides = None
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except ImportError:
        pass
    if overrides is None:
        argv = launched_with()
        overrides = [a for a in argv[2:] if not a.startswith("-")] if argv[1:2] == ["train"] else argv[1:]
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    per_node = os.environ.get("LOCAL_WORLD_SIZE", str(world))
    start = ["torchrun", f"--nproc-per-node={per_node}", "-m", "cnnbench"] if world > 1 else ["cnnbench"]
    return shlex.join([*start, "train", *overrides])


def environment(device: Any, precision: str, compiled: bool, synthetic: bool) -> dict[str, Any]:
    """What a reader needs to trust or reproduce a result."""
    import torch
    import torchvision

    from cnnbench.version import __version__

    cuda = torch.cuda.is_available() and device.type == "cuda"
    return {
        "cnnbench_version": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if cuda
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "precision": precision,
        "compile": compiled,
        "synthetic_data": synthetic,
        "command": rerun_command(),
        "launched_with": launched_with(),
        "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }


def saved_config(run_dir: Path):
    """The run's composed config as Hydra saved it (``.hydra/config.yaml``), struct mode on."""
    from omegaconf import DictConfig, OmegaConf

    path = run_dir / SAVED_CONFIG
    if not path.is_file():
        raise CnnbenchError(
            f"{run_dir} has no saved config (.hydra/config.yaml), so it is not a cnnbench run folder. "
            f"Point the command at a folder written by `cnnbench train`."
        )
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise CnnbenchError(
            f"The saved config {path} cannot be read ({str(exc).splitlines()[0][:200]}). Nothing was "
            f"changed; restore the file, or start a new run with `cnnbench train`."
        ) from None
    if not isinstance(cfg, DictConfig):
        raise CnnbenchError(f"The saved config {path} is not a mapping; nothing was changed.")
    OmegaConf.set_struct(cfg, True)
    return cfg
