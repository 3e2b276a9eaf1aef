"""Atomic checkpoint files that load with ``weights_only=True`` (they cannot execute code)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, discard, os_error_of

__all__ = ["CHECKPOINT_NAME", "has_checkpoint", "load_checkpoint", "save_checkpoint"]

log = logging.getLogger("cnnbench")


def previous_of(path: Path) -> Path:
    return (
        path.with_name(PREVIOUS_CHECKPOINT_NAME)
        if path.name == CHECKPOINT_NAME
        else path.with_suffix(".prev.pt")
    )


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file and flush it to disk; then the current checkpoint becomes the previous
    one (``checkpoint.prev.pt``) and the new one takes its name.

    A crash, a full disk or a second Ctrl-C mid-write leaves the previous checkpoint intact; a crash
    between the two renames leaves the previous one, which ``load_checkpoint`` falls back to.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as exc:
                # A write that fails inside torch.save (a full disk, the file-size limit) surfaces as the
                # RuntimeError of its zip writer's clean-up; the OSError is what the caller can act on.
                cause = os_error_of(exc)
                if cause is None:
                    raise
                raise cause from None
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_of(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        discard(tmp)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run folder holds a checkpoint to continue from (the last one or the previous one)."""
    return (run_dir / CHECKPOINT_NAME).is_file() or (run_dir / PREVIOUS_CHECKPOINT_NAME).is_file()


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, fallback: bool = True) -> dict[str, Any]:
    """Load on the CPU with ``weights_only=True``; a missing, truncated or foreign file is a CnnbenchError.

    ``fallback``: when ``path`` is missing or unreadable but the previous checkpoint is readable, load
    that one (and say so): the run then continues from an earlier iteration, still exactly.
    """
    previous = previous_of(path)
    if fallback and previous.is_file():
        try:
            return _load(path)
        except CnnbenchError as exc:
            try:
                state = _load(previous)
            except CnnbenchError:
                raise exc from None
            log.warning(
                "%s Continuing from the previous checkpoint %s (iteration %s) instead.",
                str(exc).split(" Nothing was changed")[0],
                previous.name,
                state.get("iteration"),
            )
            return state
    return _load(path)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CnnbenchError(
            f"No checkpoint at {path}. A run folder holds checkpoint.pt once the run has trained for "
            f"trainer.ckpt_every iterations or was interrupted; start a new run with `cnnbench train`."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        detail = next(iter(str(exc).splitlines()), "")[:200]  # an empty file raises EOFError('')
        raise CnnbenchError(
            f"The checkpoint {path} cannot be read ({type(exc).__name__}: {detail}). "
            f"It is truncated, corrupt or not a cnnbench checkpoint. Nothing was changed; restore it from a "
            f"copy, or start the run again with `cnnbench train`."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise CnnbenchError(
            f"{path} is not a cnnbench checkpoint (it lacks the model state or the iteration). Nothing was "
            f"changed; point `cnnbench resume` at a run folder written by `cnnbench train`."
        )
    return state
