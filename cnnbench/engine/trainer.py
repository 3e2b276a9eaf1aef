"""``run(cfg, run_dir)``: the training loop of one run, composed from the engine's units.

``Trainer`` builds the parts (``engine.parts``), the step (``engine.step``), the state (``engine.state``)
and the records (``engine.records``), then ``train()`` loops: step, and at the sync points log, evaluate,
checkpoint, and check for a stop signal or a non-finite loss.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cnnbench.core.distributed import all_reduce, broadcast_object, context, shutdown
from cnnbench.core.signals import GracefulStop
from cnnbench.engine.parts import build_parts
from cnnbench.engine.records import RunRecords
from cnnbench.engine.state import RunState, check_same_config, checkpoint_state, recorded_fast_path, restore
from cnnbench.engine.step import RunDiverged, TrainStep, evaluate
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.choice import CACHE_FILE as FASTPATH_RECORD
from cnnbench.rundir.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from cnnbench.rundir.continuation import decide, job_id
from cnnbench.rundir.files import (
    BEST_CHECKPOINT_NAME,
    NO_ROOM,
    READ_ONLY,
    NotWritten,
    existing_run_error,
    holds_run,
    read_env,
    write_error,
)
from cnnbench.rundir.lock import holding
from cnnbench.rundir.logs import watch_log_file
from cnnbench.rundir.validate import check_config

log = logging.getLogger("cnnbench")

__all__ = ["RunDiverged", "Trainer", "run"]


class CheckpointNotWritten(NotWritten):
    """A full disk or a read-only folder at a checkpoint: the run stops, its last checkpoint intact (exit 75,
    EX_TEMPFAIL: the same command continues it later)."""


class Trainer:
    """One run: built from a config and a run folder, then ``train()`` until done or stopped.

    ``resume``: continue from the folder's checkpoint. ``restart``: a resumed sweep starting a job that
    never reached its first checkpoint (the folder holds its records, not a run to continue).
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        resume: bool = False,
        restart: bool = False,
        sweep_dir: Path | None = None,
    ) -> None:
        check_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.sweep_dir = Path(sweep_dir) if sweep_dir is not None else None
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        checkpoint = load_checkpoint(self.ckpt_path) if resume else None
        if checkpoint is not None:
            check_same_config(cfg, checkpoint, self.run_dir)

        dist = context()
        fresh = not resume and not restart
        if fresh and dist.is_main and holds_run(self.run_dir):
            raise existing_run_error(self.run_dir)  # before anything is loaded or written

        # A resume trains with the recorded fast path; the jobs of a sweep share the first one's choice.
        recorded = recorded_fast_path(checkpoint, read_env(self.run_dir)) if checkpoint is not None else None
        sweep_record = Path(sweep_dir) / FASTPATH_RECORD if sweep_dir is not None else None
        self.parts = build_parts(cfg, dist, recorded=recorded, sweep_record=sweep_record)
        self.step = TrainStep(self.parts)
        if checkpoint is not None:
            self.state = restore(self.parts, self.step, checkpoint, self.run_dir)
        else:
            self.state = RunState()
        self.resumed = checkpoint is not None
        self.records = RunRecords(self.parts, self.run_dir, self.state, continued=resume or restart)

    # ----- sync points -----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write checkpoint.pt, unless the weights or a loss went non-finite (the last good one is kept)."""
        self.step.mark_bad_weights(self.state.iteration)
        self._check_finite()
        self._log_gradflow()
        if self.parts.dist.is_main:
            # TensorBoard's points up to here are on disk before the checkpoint that counts them as written
            # (a resume purges only the points after it).
            self.records.flush()
            self._save(self.ckpt_path)

    def _save(self, path: Path) -> None:
        try:
            save_checkpoint(checkpoint_state(self.parts, self.step, self.state), path)
        except OSError as exc:
            raise CheckpointNotWritten(str(self.records.not_written(exc, path))) from None
        if path == self.ckpt_path:
            self.state.checkpointed = self.state.iteration

    def _save_best(self) -> None:
        """best.pt: the checkpoint of the weights with the best validation error so far."""
        self.step.mark_bad_weights(self.state.iteration)
        if int(self.step.first_bad_iter.item()) < 0:  # a local check: only rank 0 evaluates (no collective)
            self._save(self.run_dir / BEST_CHECKPOINT_NAME)

    def _log_gradflow(self) -> None:
        for iteration, scalars in self.step.gradflow.flush():
            self.records.scalars(scalars, iteration)

    def _check_finite(self) -> None:
        # Every rank reaches the same sync points, so the collective is matched; a NaN on any rank stops all.
        bad = self.step.diverged_at()
        if bad is not None:
            raise RunDiverged(
                f"The training loss became non-finite (NaN/inf) at iteration {bad}; the run diverged. "
                f"The last good checkpoint (if any) in {self.run_dir} is kept. Lower optimizer.lr, add a "
                f"warm-up (schedule.warmup_iters=400) or use trainer.precision=fp32."
            )

    def _log_window(self, iteration: int, seconds: float) -> None:
        window_iters = self.step.window_iters
        self._check_finite()
        stats = self.step.window_stats()
        stats["lr"] = self.parts.lr_at(iteration - 1)
        speed = {"img_per_s": window_iters * self.parts.batch_size / max(seconds, 1e-9)}
        self.records.log_scalars(stats, iteration, shown=speed)
        self._log_gradflow()
        self.state.metrics.update(train_loss=stats["loss/train"], train_error=stats["error/train"])
        self._end_warmup(iteration, stats["error/train"])

    def _end_warmup(self, iteration: int, train_error: float) -> None:
        """The paper's warm-up rule (schedule.warmup_until_error), at the end of a logging window: every rank
        decides alike (the window's error is reduced over all ranks), before this iteration's checkpoint."""
        lr_at = self.parts.lr_at
        if lr_at.observe(iteration, train_error) and self.parts.dist.is_main:
            log.info(lr_at.describe())  # metrics.json gets lr_at.record() at its next write

    def _evaluate_all(self) -> None:
        state = self.state
        results: dict[str, float] = {}
        for split, (images, labels) in self.parts.data.eval_sets.items():
            loss, error = evaluate(self.parts, images, labels)
            results[f"loss/{split}"], results[f"error/{split}"] = loss, error
            state.metrics[f"{split}_loss"], state.metrics[f"{split}_error"] = loss, error
            if self.parts.ema is not None:  # the weights' moving average, beside the raw weights
                loss, error = evaluate(self.parts, images, labels, ema=True)
                results[f"loss/{split}_ema"], results[f"error/{split}_ema"] = loss, error
                state.metrics[f"{split}_loss_ema"], state.metrics[f"{split}_error_ema"] = loss, error
        if not math.isfinite(results["loss/test"]):
            log.warning("Test loss is not finite at iteration %d.", state.iteration)
        state.record_test_error(results["error/test"])
        if "error/val" in results and state.record_val_error(results["error/val"], results["error/test"]):
            self._save_best()
        self.records.log_scalars(
            results, state.iteration, shown={"lr": self.parts.lr_at(state.iteration - 1)}
        )
        self.records.flush()

    def _stop_agreed(self, stop: GracefulStop, log_every: int) -> bool:
        """Whether to stop after this step. Ranks agree at logging points only (no per-step collective)."""
        dist = self.parts.dist
        if not dist.enabled:
            return stop.signum is not None
        if self.state.iteration % log_every:
            return False
        import torch

        flag = all_reduce(torch.tensor(stop.signum or 0, device=self.parts.device), "max")
        stop.signum = stop.signum or int(flag.item()) or None
        return stop.signum is not None

    # ----- the loop --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        t, state, records = self.cfg.trainer, self.state, self.records
        log_every, eval_every, ckpt_every = int(t.log_every), int(t.eval_every), int(t.ckpt_every)
        max_iters = int(t.max_iters)
        is_main = self.parts.dist.is_main
        if self.resumed:
            log.info("Resuming %s at iteration %d/%d", self.run_dir, state.iteration, max_iters)
        try:
            records.start(fresh=not self.resumed and is_main)
            window_start = last_tick = time.perf_counter()
            with GracefulStop() as stop, self.parts.compile_fallback():
                stopping = False
                while state.iteration < max_iters and not stopping:
                    self.step(state.iteration)
                    state.iteration = it = state.iteration + 1
                    records.advance(it)
                    done = it == max_iters
                    if it % log_every == 0 or done:
                        now = time.perf_counter()
                        self._log_window(it, now - window_start)
                        window_start = now
                    if (it % eval_every == 0 or done) and is_main:
                        self._evaluate_all()
                        window_start = time.perf_counter()
                    now = time.perf_counter()
                    state.elapsed += now - last_tick
                    last_tick = now
                    if it % ckpt_every == 0 or done:
                        self.checkpoint()
                    if it % eval_every == 0 and not done:
                        records.write_metrics("running")
                    stopping = self._stop_agreed(stop, log_every)
                    if stopping:
                        stop.announce()
                if stopping and state.iteration < max_iters:
                    self.checkpoint()
                    requeue = " (requeued by the scheduler: continues by itself)" if stop.requeued else ""
                    records.write_metrics(
                        "interrupted", message=f"stopped by {signal.Signals(stop.signum).name}{requeue}"
                    )
                    records.close()
                    stop.hand_over()  # submitit requeues the job and exits here
                    raise SystemExit(self._interrupted_message(stop.signum))
            records.write_metrics("completed", message=None)
            if is_main:
                log.info(
                    "Done: train error %.2f%%, test error %.2f%% (best %.2f%% at iteration %s) -> %s",
                    100 * state.metrics["train_error"],
                    100 * state.metrics["test_error"],
                    100 * state.best_test_error,
                    state.best_iteration,
                    self.run_dir,
                )
            return state.metrics
        except NotWritten as exc:  # a file of the run that cannot be written (a full disk)
            records.record_end("interrupted", message=str(exc))
            raise
        except RunDiverged as exc:
            records.record_end("diverged", diverged_at=int(self.step.first_bad_iter.item()), message=str(exc))
            raise
        except KeyboardInterrupt:
            records.record_end(
                "interrupted", message="aborted by a second Ctrl-C; resume continues from the last checkpoint"
            )
            raise
        except Exception as exc:
            records.record_end("failed", message=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            records.close()

    def _interrupted_message(self, signum: int) -> int:
        # Commands to paste, even with spaces in the paths. In a sweep, resuming the sweep folder also
        # starts the jobs that never ran; the job folder alone continues only this job.
        if self.sweep_dir is not None:
            how = (
                f"Continue the sweep (this job and every job not finished) with:\n  cnnbench resume "
                f"{shlex.quote(str(self.sweep_dir))}\nor this job alone with:\n  cnnbench resume "
                f"{shlex.quote(str(self.run_dir))}"
            )
        else:
            how = f"Continue with:\n  cnnbench resume {shlex.quote(str(self.run_dir))}"
        log.error(
            "Interrupted by %s at iteration %d/%d; checkpoint written. %s",
            signal.Signals(signum).name,
            self.state.iteration,
            int(self.cfg.trainer.max_iters),
            how,
        )
        return 128 + signum


def run(
    cfg: DictConfig,
    run_dir: Path,
    resume: bool = False,
    restart: bool = False,
    sweep_dir: Path | None = None,
) -> dict[str, Any]:
    """Train the run described by ``cfg`` in ``run_dir`` (with ``resume``: continue from its checkpoint).

    ``sweep_dir``: the multirun folder of a sweep job (its jobs share one fast path).
    """
    # One process per run folder (rundir/lock.py): run.lock is held from before the trainer writes anything
    # until the run ends, however it ends. Under torchrun rank 0 holds it: the other ranks write nothing.
    with holding(Path(run_dir), "train", job_id=job_id(), enabled=context().is_main):
        return _run(cfg, run_dir, resume, restart, sweep_dir)


def _run(
    cfg: DictConfig, run_dir: Path, resume: bool, restart: bool, sweep_dir: Path | None
) -> dict[str, Any]:
    watch_log_file(Path(run_dir))  # a line train.log cannot take stops the run (RunRecords), quietly
    try:
        if not (resume or restart):
            # trainer.resume decides what a folder that already holds a run means (rundir/continuation.py).
            start = broadcast_object(decide(cfg, Path(run_dir)) if context().is_main else None)
            if start.done is not None:
                log.info("%s is already completed; nothing to do, nothing changed.", run_dir)
                return start.done
            resume, restart = start.resume, start.restart
        trainer = Trainer(cfg, run_dir, resume=resume, restart=restart, sweep_dir=sweep_dir)
    except OmegaConfBaseException as exc:
        # A key the config lacks (e.g. a hand-edited saved config); nothing has been written yet.
        raise CnnbenchError(
            f"The config lacks a key cnnbench needs ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Nothing was changed; restore the key (see `cnnbench config`) in {run_dir / '.hydra'}."
        ) from None
    except OSError as exc:
        if exc.errno not in NO_ROOM | READ_ONLY:
            raise
        # A file written before training, outside the run's records: a dataset's download (its lock file,
        # archive or folder in a read-only data root).
        raise write_error(
            Path(exc.filename or run_dir),
            exc,
            "Nothing was trained.",
            "Make that folder writable by this user, or point the setting that names it (data.root for a "
            "dataset) at a writable folder.",
        ) from None
    try:
        return trainer.train()
    finally:
        del trainer  # free the DDP model (and gloo's threads with it) before the process group goes
        shutdown()
