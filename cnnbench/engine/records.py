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
from cnnbench.engine.parts import Parts, model_options_of
from cnnbench.engine.state import RunState
from cnnbench.fastpath.steady import SteadyState
from cnnbench.launchers.slots import sharing_record
from cnnbench.rundir.continuation import close_attempt, open_attempt
from cnnbench.rundir.files import (
    ENV_NAME,
    METRICS_NAME,
    NO_ROOM,
    NotWritten,
    environment,
    read_metrics,
    write_failure,
    write_json_atomic,
)
from cnnbench.rundir.logs import watch_log_file
from cnnbench.rundir.progress import Progress
from cnnbench.rundir.tb import TensorBoardLog

log = logging.getLogger("cnnbench")

# metrics.json keys present (possibly null) from the first write on (docs/design-sketch.md).
RESULT_KEYS = ("train_error", "train_loss", "test_error", "test_loss")


def numerics_of(parts: Parts) -> dict[str, Any]:
    """The numerics a run trains with (env.json, HParams, the report): e.g. ``paper (fp32, BN/64)``."""
    t = parts.cfg.trainer
    images = bn_images(int(t.batch_size), parts.dist.world_size, t.get("bn_group"), bool(t.get("sync_bn")))
    tf32 = tf32_active(parts.device.type, parts.fast_path.precision)
    return describe(parts.fast_path.precision, images, tf32=tf32, bn_group=t.get("bn_group"))


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
    # Every augmentation option: the HParams table can then sort and filter by any of them.
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
    """The run folder's records of one attempt (a fresh start or a continuation).

    A record that cannot be written (a full disk, a folder made read-only) stops the run: the methods the
    loop calls raise ``NotWritten`` (exit 75), and the run ends as interrupted with its last checkpoint,
    from which the same command continues; the records are then written again from that iteration
    (TensorBoard's purge_step, metrics.json), so they have no hole. ``record_end`` alone never raises: it
    records how the run ended, if it can.
    """

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
        # The lines of train.log that cannot be written (a full disk) stop the run too, at its next record.
        self.log_file = watch_log_file(self.run_dir) if self.enabled else None
        # A continuation purges the TensorBoard points logged after the checkpoint (no duplicate steps).
        try:
            self.tb = TensorBoardLog(
                self.run_dir,
                resume_from=state.iteration if continued else None,
                enabled=self.enabled,
                model=cfg.model.name,  # its Figure 6 family tags (cnnbench/rundir/tb.py)
            )
        except OSError as exc:
            raise self.not_written(exc) from None
        self.progress: Progress | None = None
        # The steady-state step against the probe's prediction (the probe's own workload only).
        self.steady = SteadyState.for_run(parts) if self.enabled else None

    def not_written(self, exc: OSError, path: Path | None = None) -> NotWritten:
        """The run's stop when one of its files cannot be written (exit 75: the same command continues)."""
        path = path or Path(exc.filename or self.run_dir)
        state, run_dir = self.state, self.run_dir
        if state.checkpointed is not None:
            kept = f"; its last good checkpoint (iteration {state.checkpointed}) is kept"
            again = f"continue it with `cnnbench resume {run_dir}` (or the same command again)"
        else:
            kept = ", before its first checkpoint"
            again = "run the same command again (it starts the run anew)"
        room = exc.errno in NO_ROOM
        fix = "free space (or raise the quota or the file-size limit)" if room else "make the folder writable"
        return NotWritten(
            f"Could not write {path} ({write_failure(exc)}). The run stops as interrupted at iteration "
            f"{state.iteration}{kept}. To go on, {fix}, then {again}."
        )

    def check_log_file(self) -> None:
        """Raise the stop when a line of train.log could not be written since the last look."""
        if self.log_file is not None and self.log_file.error is not None:
            raise self.not_written(self.log_file.error, self.log_file.path)

    def start(self, fresh: bool) -> None:
        """Announce the run; a fresh start also writes env.json and the TensorBoard hparams."""
        p, cfg = self.parts, self.parts.cfg
        # One attempt per start: a continuation reads the history from metrics.json, which also holds
        # attempts that ended after the last checkpoint (a killed attempt's entry never got its end).
        # Opened first, so that a start that stops at its first file (a full disk) is an attempt too.
        on_disk = (read_metrics(self.run_dir) or {}).get("attempts") if self.enabled else None
        self.state.metrics["attempts"] = open_attempt(
            on_disk or self.state.metrics.get("attempts") or [], self.state.iteration
        )
        if self.enabled and fresh:
            env = environment(p.device, p.fast_path.precision, p.fast_path.compile, p.data.synthetic)
            env["world_size"] = p.dist.world_size
            env["fast_path"] = p.fast_path.record()
            env["numerics"] = numerics = numerics_of(p)
            env["gpu_sharing"] = sharing_record()  # k jobs per GPU, MPS (cnnbench/launchers/); null alone
            try:
                write_json_atomic(self.run_dir / ENV_NAME, env)
            except OSError as exc:
                raise self.not_written(exc, self.run_dir / ENV_NAME) from None
            hparams = hparams_of(cfg, p.params, p.fast_path.precision, p.data.synthetic)
            fp = p.fast_path
            hparams.update(channels_last=fp.channels_last, compile=fp.compile)
            hparams.update(cuda_graphs=fp.cuda_graphs, fused_optimizer=fp.fused_optimizer)
            hparams.update(numerics=numerics["name"], bn_images=numerics["bn_images"], tf32=numerics["tf32"])
            try:
                self.tb.start(hparams)
            except OSError as exc:
                raise self.not_written(exc) from None
        log.info(
            "%s: %s parameters, %s, %s%s, %d iterations of batch %d, numerics %s -> %s",
            self.label,
            f"{p.params:,}",
            p.device,
            p.fast_path.precision,
            ", compiled" if p.fast_path.compile else "",
            self.max_iters,
            p.batch_size,
            numerics_of(p)["label"],
            self.run_dir,
        )
        self.write_metrics("running", message=None)
        self.progress = Progress(self.state.iteration, self.max_iters, self.label, enabled=self.enabled)

    def advance(self, iteration: int) -> None:
        if self.progress is not None:
            self.progress.advance(iteration)

    def log_scalars(self, values: dict[str, float], iteration: int, shown: dict[str, float] | None = None):
        """TensorBoard scalars at ``iteration``, and the progress line (``shown`` adds console-only stats)."""
        self.scalars(values, iteration)
        if self.steady is not None and shown and "img_per_s" in shown:
            self.steady.window(iteration, shown["img_per_s"])
        if self.progress is not None:
            self.progress.report(iteration, {**values, **(shown or {})})
        self.check_log_file()  # the progress line was logged

    def scalars(self, values: dict[str, float], iteration: int) -> None:
        """TensorBoard scalars only (diagnostics that the progress line does not show)."""
        try:
            self.tb.scalars(values, iteration)
        except OSError as exc:
            raise self.not_written(exc) from None

    def flush(self) -> None:
        """Every TensorBoard point so far on disk (before a checkpoint that counts them as written)."""
        try:
            self.tb.flush()
        except OSError as exc:
            raise self.not_written(exc) from None
        self.check_log_file()

    def write_metrics(self, status: str, **extra: Any) -> None:
        """metrics.json: the status (running, completed, interrupted, diverged, failed) and the numbers.
        ``NotWritten`` when it (or before ``completed`` TensorBoard, or train.log) cannot be written."""
        if not self.enabled:
            return
        if status == "completed":
            self.flush()  # nothing is completed with points still unwritten
        self.check_log_file()
        try:
            self._write_metrics(status, **extra)
        except OSError as exc:
            raise self.not_written(exc, self.run_dir / METRICS_NAME) from None

    def record_end(self, status: str, **extra: Any) -> None:
        """metrics.json's last status of an attempt that fails or stops; never raises (the reason for the
        stop is what the user must see), a write that fails is logged."""
        if not self.enabled:
            return
        try:
            self._write_metrics(status, **extra)
        except OSError as exc:
            log.error("Could not write %s either (%s).", METRICS_NAME, exc.strerror or exc)

    def _write_metrics(self, status: str, **extra: Any) -> None:
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
        write_json_atomic(self.run_dir / METRICS_NAME, state.metrics)

    def close(self) -> None:
        """Stop the progress display and flush TensorBoard (idempotent)."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        self.tb.close()
