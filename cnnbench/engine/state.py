"""A run's state: where it is (``RunState``), what its checkpoint holds, and when a checkpoint continues it.

A checkpoint holds everything the next iteration depends on: weights, optimizer and scaler state, every
RNG stream (global, sampler, augmentation), the open logging window and the run's progress. Loaded into
freshly built parts, it continues the run bit for bit (with the same number of CPU threads).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.core.rng import rng_state, set_rng_state
from cnnbench.engine.parts import Parts, augment_seed
from cnnbench.engine.step import TrainStep
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.continuation import changed_settings, flatten_config
from cnnbench.rundir.files import CHECKPOINT_NAME, SAVED_CONFIG, read_env
from cnnbench.version import __version__

CHECKPOINT_VERSION = 1

log = logging.getLogger("cnnbench")

# What a checkpoint holds beyond the weights, the optimizer and the iteration, and what continuing
# without it means. Checkpoints written by other cnnbench versions may lack some of it: such a run
# continues (the same run, no longer bit for bit the uninterrupted one) and train.log says so. Without
# the optimizer's state (momentum buffers) it would train differently from there on: that is refused.
CONTINUES_WITHOUT = {
    "rng": "the global random generators start again from the run's seed",
    "sampler": "the batch order is shuffled afresh from the run's seed",
    "augment_rng": "the augmentation draws afresh from the run's seed",
    "window": "the first training loss and error logged after it average fewer iterations",
    "best_test_error": "the best test error counts from here",
    "best_iteration": "the best test error counts from here",
    "elapsed_seconds": "the training time counts from here",
    "metrics": "the last numbers in metrics.json are filled in again at the next evaluation",
}
REQUIRED = {"optimizer": "the optimizer's state (its momentum buffers)"}


@dataclass
class RunState:
    """Where a run is: iterations done, the best test error so far, time spent, the latest metrics."""

    iteration: int = 0
    best_test_error: float | None = None
    best_iteration: int | None = None
    elapsed: float = 0.0  # seconds of training, summed over resumes
    metrics: dict[str, Any] = field(default_factory=dict)
    # Model selection on the validation split (data.val_size): the best validation error, its
    # iteration, and the test error of that iteration's weights (the honest test number).
    best_val_error: float | None = None
    best_val_iteration: int | None = None
    test_error_at_best_val: float | None = None
    # The iteration of the last checkpoint on disk, for the message of a run that stops (not saved).
    checkpointed: int | None = None

    def record_test_error(self, error: float) -> None:
        if self.best_test_error is None or error < self.best_test_error:
            self.best_test_error, self.best_iteration = error, self.iteration

    def record_val_error(self, val_error: float, test_error: float) -> bool:
        """Whether ``val_error`` is a new best (then these weights are the selected model)."""
        if self.best_val_error is not None and val_error >= self.best_val_error:
            return False
        self.best_val_error, self.best_val_iteration = val_error, self.iteration
        self.test_error_at_best_val = test_error
        return True

    def selection(self) -> dict[str, Any]:
        """The metrics.json keys of model selection (None without a validation split)."""
        return {
            "best_val_error": self.best_val_error,
            "best_val_iteration": self.best_val_iteration,
            "test_error_at_best_val": self.test_error_at_best_val,
        }


def checkpoint_state(parts: Parts, step: TrainStep, state: RunState) -> dict[str, Any]:
    """The checkpoint's content (tensors, numbers and strings only: loads with weights_only=True)."""
    return {
        "version": CHECKPOINT_VERSION,
        "cnnbench_version": __version__,  # who wrote it: a later version names it when it lacks something
        "iteration": state.iteration,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
        "rng": rng_state(parts.device),
        "sampler": parts.batches.state_dict(),
        "augment_rng": parts.augment.generator.get_state(),
        "window": step.state_dict(),
        # Where the warm-up rule ended the warm-up (schedule.warmup_until_error): the lr depends on it.
        "warmup": parts.lr_at.state_dict(),
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "best_test_error": state.best_test_error,
        "best_iteration": state.best_iteration,
        "elapsed_seconds": state.elapsed,
        "metrics": state.metrics,
        "selection": state.selection(),
        "config": OmegaConf.to_container(parts.cfg, resolve=True),
        # For using the weights after training (cnnbench eval/export): the input normalization and
        # the classifier's width, without loading the training set again.
        "normalization": {"mean": parts.augment.mean.cpu(), "std": parts.augment.std.cpu()},
        "num_classes": parts.data.num_classes,
        # The precision/layout/compile this run trains with: a resume reuses them, never a new probe.
        "fast_path": parts.fast_path.record(),
    }


def written_by(checkpoint: Mapping[str, Any], run_dir: Path) -> tuple[str, str | None]:
    """Who wrote the checkpoint, for a message (``cnnbench 0.1.0``), and that version (None: unknown)."""
    version = checkpoint.get("cnnbench_version")
    if version:
        return f"cnnbench {version}", str(version)
    version = (read_env(run_dir) or {}).get("cnnbench_version")  # the version that started the run
    if version:
        return f"cnnbench {version} (as the run's env.json says; the checkpoint records no version)", version
    return "a cnnbench version that recorded no version number", None


def check_complete(checkpoint: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse a checkpoint (of another version) that lacks what the run cannot continue without."""
    lacking = [what for key, what in REQUIRED.items() if key not in checkpoint]
    if not lacking:
        return
    who, version = written_by(checkpoint, run_dir)
    with_it = (
        f"cnnbench {version} (pip install 'cnnbench=={version}')" if version else "the version that wrote it"
    )
    raise CnnbenchError(
        f"The checkpoint {run_dir / CHECKPOINT_NAME} was written by {who} and lacks {', '.join(lacking)}; "
        f"this cnnbench {__version__} cannot continue the run without it and be the same run. Nothing was "
        f"changed; continue it with {with_it}, or start a new run with `cnnbench train`."
    )


def restore(parts: Parts, step: TrainStep, checkpoint: Mapping[str, Any], run_dir: Path) -> RunState:
    """Load ``checkpoint`` into freshly built parts and step; returns the run's state at that point.

    A checkpoint of another version that lacks some of the state continues without it (``CONTINUES_WITHOUT``,
    said in train.log); one without the optimizer's state is refused (``check_complete``)."""
    check_complete(checkpoint, run_dir)
    try:
        parts.model.load_state_dict(checkpoint["model"])
        parts.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CnnbenchError(
            f"The checkpoint in {run_dir} does not fit the model/optimizer its config builds "
            f"({str(exc).splitlines()[0][:200]}). Was the config edited? Nothing was changed."
        ) from None
    missing = {key: what for key, what in CONTINUES_WITHOUT.items() if key not in checkpoint}
    if parts.scaler and checkpoint.get("scaler"):
        parts.scaler.load_state_dict(checkpoint["scaler"])
    elif parts.scaler and "scaler" not in checkpoint:
        missing["scaler"] = "the fp16 loss scale starts again from its initial value"
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"], parts.device)
    if "sampler" in checkpoint:
        parts.batches.load_state_dict(checkpoint["sampler"])
    if "augment_rng" in checkpoint:
        parts.augment.generator.set_state(checkpoint["augment_rng"])
    if "window" in checkpoint:
        step.load_state_dict(checkpoint["window"])
    parts.lr_at.load_state_dict(checkpoint.get("warmup"))  # absent in older checkpoints: not ended
    if parts.ema is not None and checkpoint.get("ema") is not None:
        parts.ema.load_state_dict(checkpoint["ema"])
    elif parts.ema is not None and "ema" not in checkpoint:
        missing["ema"] = "the weights' moving average starts again from the current weights"
    state = RunState(
        iteration=int(checkpoint["iteration"]),
        best_test_error=checkpoint.get("best_test_error"),
        best_iteration=checkpoint.get("best_iteration"),
        elapsed=float(checkpoint.get("elapsed_seconds", 0.0)),
        metrics=dict(checkpoint.get("metrics") or {}),
        **(checkpoint.get("selection") or {}),  # absent in checkpoints of older versions
        checkpointed=int(checkpoint["iteration"]),
    )
    if missing:
        who, _ = written_by(checkpoint, run_dir)
        log.warning(
            "The checkpoint (iteration %d) was written by %s and lacks %s. The run continues from it, but "
            "not bit for bit as an uninterrupted run would: %s.",
            state.iteration,
            who,
            ", ".join(missing),
            "; ".join(dict.fromkeys(missing.values())),
        )
    rank = parts.dist.rank
    if rank > 0:  # the checkpoint holds rank 0's augmentation stream
        parts.augment.generator.manual_seed(augment_seed(int(parts.cfg.seed), rank, state.iteration))
    return state


def recorded_fast_path(checkpoint: Mapping[str, Any], env: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fast path a checkpointed run trained with (older runs: from env.json and their config)."""
    if checkpoint.get("fast_path"):
        return dict(checkpoint["fast_path"])
    env, trainer = env or {}, (checkpoint.get("config") or {}).get("trainer", {})
    layout = trainer.get("channels_last", True)
    return {
        "precision": env.get("precision", "fp32"),
        "channels_last": layout if isinstance(layout, bool) else True,
        "compile": bool(env.get("compile", False)),
    }


def check_same_config(cfg: DictConfig, checkpoint: Mapping[str, Any], run_dir: Path) -> None:
    """The saved config must still be the one the checkpoint was trained with (else: not a continuation)."""
    if "config" not in checkpoint:  # a checkpoint of a version that did not record it: nothing to compare
        log.warning("The checkpoint records no config; continuing with %s.", run_dir / SAVED_CONFIG)
        return
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = changed_settings(checkpoint.get("config", {}), now)
    if changed:
        old = flatten_config(checkpoint.get("config", {}))
        new = flatten_config(now)
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise CnnbenchError(
            f"The config in {run_dir / SAVED_CONFIG} differs from the one checkpoint.pt was "
            f"trained with ({shown}), so resuming would not continue the same run. Nothing was changed; "
            f"restore the saved config, or start a new run with `cnnbench train` and the new settings."
        )
