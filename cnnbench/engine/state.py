"""A run's state: where it is (``RunState``), what its checkpoint holds, and when a checkpoint continues it.

A checkpoint holds everything the next iteration depends on: weights, optimizer and scaler state, every
RNG stream (global, sampler, augmentation), the open logging window and the run's progress. Loaded into
freshly built parts, it continues the run bit for bit (with the same number of CPU threads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.core.rng import rng_state, set_rng_state
from cnnbench.engine.parts import Parts, augment_seed
from cnnbench.engine.step import TrainStep
from cnnbench.errors import CnnbenchError
from cnnbench.runs.continuation import changed_settings, flatten_config
from cnnbench.runs.files import SAVED_CONFIG

CHECKPOINT_VERSION = 1


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


def restore(parts: Parts, step: TrainStep, checkpoint: Mapping[str, Any], run_dir: Path) -> RunState:
    """Load ``checkpoint`` into freshly built parts and step; returns the run's state at that point."""
    try:
        parts.model.load_state_dict(checkpoint["model"])
        parts.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CnnbenchError(
            f"The checkpoint in {run_dir} does not fit the model/optimizer its config builds "
            f"({str(exc).splitlines()[0][:200]}). Was the config edited? Nothing was changed."
        ) from None
    if parts.scaler and checkpoint.get("scaler"):
        parts.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"], parts.device)
    parts.batches.load_state_dict(checkpoint["sampler"])
    parts.augment.generator.set_state(checkpoint["augment_rng"])
    step.load_state_dict(checkpoint["window"])
    parts.lr_at.load_state_dict(checkpoint.get("warmup"))  # absent in older checkpoints: not ended
    if parts.ema is not None and checkpoint.get("ema") is not None:
        parts.ema.load_state_dict(checkpoint["ema"])
    state = RunState(
        iteration=int(checkpoint["iteration"]),
        best_test_error=checkpoint["best_test_error"],
        best_iteration=checkpoint["best_iteration"],
        elapsed=float(checkpoint["elapsed_seconds"]),
        metrics=dict(checkpoint["metrics"]),
        **(checkpoint.get("selection") or {}),  # absent in checkpoints of older versions
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
