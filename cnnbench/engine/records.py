"""What a run writes for people and tools: metrics.json, env.json, TensorBoard and the console progress.

Only rank 0 of a distributed run writes; on the other ranks every method is a no-op. The loop calls
these at its sync points only (logging, evaluation, checkpoint), never per iteration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.core.numerics import bn_images, describe, tf32_active
from cnnbench.engine.gpus import sharing_record
from cnnbench.engine.parts import Parts, model_options_of
from cnnbench.engine.state import RunState
from cnnbench.runs.continuation import close_attempt, open_attempt
from cnnbench.runs.files import ENV_NAME, METRICS_NAME, environment, read_metrics, write_json_atomic
from cnnbench.runs.progress import Progress
from cnnbench.runs.tb import TensorBoardLog

log = logging.getLogger("cnnbench")

# metrics.json keys present (possibly null) from the first write on (docs/design-sketch.md).
RESULT_KEYS = ("train_error", "train_loss", "test_error", "test_loss")


def numerics_of(parts: Parts) -> dict[str, Any]:
    """The numerics a run trains with (env.json, HParams, the report): e.g. ``paper (fp32, BN/64)``."""
    t = parts.cfg.trainer
    images = bn_images(int(t.batch_size), parts.dist.world_size, t.get("bn_group"), bool(t.get("sync_bn")))
    tf32 = tf32_active(parts.device.type, parts.precision)
    return describe(parts.precision, images, tf32=tf32, bn_group=t.get("bn_group"))


def hparams_of(cfg: DictConfig, params: int, precision: str, synthetic: bool) -> dict[str, Any]:
    """The hyperparameters shown in TensorBoard's HParams tab (flat, scalar values)."""
    hp: dict[str, Any] = {
        "model": cfg.model.name,
        "depth": int(cfg.depth),
        "seed": int(cfg.seed),
        "params": params,
        "data": cfg.data.name + (" (synthetic)" if synthetic else ""),
        "augment": cfg.augment.name,
    }
    for key, value in model_options_of(cfg).items():
        hp[f"model.{key}"] = value
    # Every augmentation option (issue 12): the HParams table can then sort and filter by any of them.
    for key, value in OmegaConf.to_container(cfg.augment, resolve=True).items():
        if key != "name":
            hp[f"augment.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    hp.update(
        {
            "optimizer": cfg.optimizer.name,
            "lr": float(cfg.optimizer.lr),
            "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
            "momentum": float(cfg.optimizer.get("momentum", 0.0)),
            "schedule": cfg.schedule.name,
            "warmup_iters": int(cfg.schedule.get("warmup_iters", 0)),
            "warmup_until_error": float(cfg.schedule.get("warmup_until_error") or 0.0),  # 0: fixed warm-up
            "nesterov": bool(cfg.optimizer.get("nesterov", False)),
            "no_decay_bn_bias": bool(cfg.optimizer.get("no_decay_bn_bias", False)),
            "label_smoothing": float(cfg.trainer.get("label_smoothing", 0.0) or 0.0),
            "ema_decay": float(cfg.trainer.get("ema_decay", 0.0) or 0.0),
            "batch_size": int(cfg.trainer.batch_size),
            "max_iters": int(cfg.trainer.max_iters),
            "precision": precision,
        }
    )
    return hp


class RunRecords:
    """The run folder's records of one attempt (a fresh start or a continuation)."""

    def __init__(self, parts: Parts, run_dir: Path, state: RunState, continued: bool) -> None:
        self.parts = parts
        self.run_dir = Path(run_dir)
        self.state = state
        self.enabled = parts.dist.is_main
        self.max_iters = int(parts.cfg.trainer.max_iters)
        cfg = parts.cfg
        self.label = f"{cfg.model.name}-{cfg.depth} on {parts.data.name}" + (
            " (SYNTHETIC)" if parts.data.synthetic else ""
        )
        # A continuation purges the TensorBoard points logged after the checkpoint (no duplicate steps).
        self.tb = TensorBoardLog(
            self.run_dir,
            resume_from=state.iteration if continued else None,
            enabled=self.enabled,
            model=cfg.model.name,  # its Figure 6 family tags (cnnbench/runs/tb.py)
        )
        self.progress: Progress | None = None

    def start(self, fresh: bool) -> None:
        """Announce the run; a fresh start also writes env.json and the TensorBoard hparams."""
        p, cfg = self.parts, self.parts.cfg
        if self.enabled and fresh:
            env = environment(p.device, p.precision, p.compiled, p.data.synthetic)
            env["world_size"] = p.dist.world_size
            env["fast_path"] = p.fast_path.record()
            env["numerics"] = numerics = numerics_of(p)
            env["gpu_sharing"] = sharing_record()  # k jobs per GPU, MPS (cnnbench/engine/gpus.py); null alone
            write_json_atomic(self.run_dir / ENV_NAME, env)
            hparams = hparams_of(cfg, p.params, p.precision, p.data.synthetic)
            fp = p.fast_path
            hparams.update(channels_last=fp.channels_last, compile=fp.compile)
            hparams.update(cuda_graphs=fp.cuda_graphs, fused_optimizer=fp.fused_optimizer)
            hparams.update(numerics=numerics["name"], bn_images=numerics["bn_images"], tf32=numerics["tf32"])
            self.tb.start(hparams)
        log.info(
            "%s: %s parameters, %s, %s%s, %d iterations of batch %d, numerics %s -> %s",
            self.label,
            f"{p.params:,}",
            p.device,
            p.precision,
            ", compiled" if p.compiled else "",
            self.max_iters,
            p.batch_size,
            numerics_of(p)["label"],
            self.run_dir,
        )
        # One attempt per start: a continuation reads the history from metrics.json, which also holds
        # attempts that ended after the last checkpoint (a killed attempt's entry never got its end).
        on_disk = (read_metrics(self.run_dir) or {}).get("attempts") if self.enabled else None
        self.state.metrics["attempts"] = open_attempt(
            on_disk or self.state.metrics.get("attempts") or [], self.state.iteration
        )
        self.write_metrics("running", message=None)
        self.progress = Progress(self.state.iteration, self.max_iters, self.label, enabled=self.enabled)

    def advance(self, iteration: int) -> None:
        if self.progress is not None:
            self.progress.advance(iteration)

    def log_scalars(self, values: dict[str, float], iteration: int, shown: dict[str, float] | None = None):
        """TensorBoard scalars at ``iteration``, and the progress line (``shown`` adds console-only stats)."""
        self.tb.scalars(values, iteration)
        if self.progress is not None:
            self.progress.report(iteration, {**values, **(shown or {})})

    def scalars(self, values: dict[str, float], iteration: int) -> None:
        """TensorBoard scalars only (diagnostics that the progress line does not show)."""
        self.tb.scalars(values, iteration)

    def flush(self) -> None:
        self.tb.flush()

    def write_metrics(self, status: str, **extra: Any) -> None:
        """metrics.json: the status (running, completed, interrupted, diverged, failed) and the numbers."""
        if not self.enabled:
            return
        p, cfg, state = self.parts, self.parts.cfg, self.state
        state.metrics.update(
            status=status,
            model=cfg.model.name,
            depth=int(cfg.depth),
            params=p.params,
            data=p.data.name,
            synthetic=p.data.synthetic,
            seed=int(cfg.seed),
            iteration=state.iteration,
            max_iters=self.max_iters,
            best_test_error=state.best_test_error,
            best_iteration=state.best_iteration,
            elapsed_seconds=round(state.elapsed, 2),
            **state.selection(),
            **p.lr_at.record(),  # the warm-up rule: where it ended (schedule.warmup_until_error)
            **extra,
        )
        for key in RESULT_KEYS:
            state.metrics.setdefault(key, None)
        if status != "running":
            reason = (
                status if status == "completed" else f"{status}: {extra.get('message') or ''}".strip(": ")
            )
            close_attempt(state.metrics.get("attempts") or [], reason, state.iteration)
        try:
            write_json_atomic(self.run_dir / METRICS_NAME, state.metrics)
        except OSError as exc:  # a full disk: the checkpoint holds the state; the next write retries
            log.error("Could not write %s (%s); training goes on.", METRICS_NAME, exc.strerror or exc)

    def close(self) -> None:
        """Stop the progress display and flush TensorBoard (idempotent)."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        self.tb.close()
