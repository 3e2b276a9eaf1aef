"""``run(cfg, run_dir)``: the training loop, evaluation, logging and checkpoints of one run.

The hot path keeps everything on the device: batches are sampled and augmented there, and the loss
and error of each logging window are summed into device tensors that are read only at logging,
evaluation and checkpoint points (no host-device synchronization per iteration).
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnbench.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from cnnbench.data import load_dataset
from cnnbench.data.augment import BatchAugment, normalization_stats
from cnnbench.data.loader import DeviceBatches
from cnnbench.device import autocast, resolve_compile, resolve_device, resolve_precision
from cnnbench.distributed import all_reduce, context, init
from cnnbench.errors import CnnbenchError
from cnnbench.gpus import job_device
from cnnbench.models import build_model
from cnnbench.optim import build_optimizer
from cnnbench.progress import Progress
from cnnbench.resume import check_same_config
from cnnbench.rng import rng_state, seed_everything, set_rng_state
from cnnbench.runfiles import (
    ENV_NAME,
    METRICS_NAME,
    environment,
    existing_run_error,
    holds_run,
    write_json_atomic,
)
from cnnbench.schedule import make_lr_schedule
from cnnbench.signals import GracefulStop
from cnnbench.tb import TensorBoardLog
from cnnbench.validate import check_config

log = logging.getLogger("cnnbench")

CHECKPOINT_VERSION = 1


class RunDiverged(CnnbenchError):
    exit_code = 3


def model_options_of(cfg: DictConfig) -> dict[str, Any]:
    """The ``model.*`` keys the builder takes (all but the name and the default depth)."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in options.items() if k not in ("name", "default_depth")}


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
    hp.update(
        {
            "optimizer": cfg.optimizer.name,
            "lr": float(cfg.optimizer.lr),
            "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
            "momentum": float(cfg.optimizer.get("momentum", 0.0)),
            "schedule": cfg.schedule.name,
            "warmup_iters": int(cfg.schedule.get("warmup_iters", 0)),
            "batch_size": int(cfg.trainer.batch_size),
            "max_iters": int(cfg.trainer.max_iters),
            "precision": precision,
        }
    )
    return hp


class Trainer:
    """One run: built from a config and a run folder, then ``train()`` until done or stopped."""

    def __init__(self, cfg: DictConfig, run_dir: Path, resume: bool = False, restart: bool = False) -> None:
        check_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = context()
        self.is_main = self.dist.is_main
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        checkpoint = load_checkpoint(self.ckpt_path) if resume else None
        if checkpoint is not None:
            check_same_config(cfg, checkpoint, self.run_dir)
        # `restart`: a resumed sweep starting a job that never reached its first checkpoint.
        fresh = not resume and not restart and self.is_main
        if fresh and holds_run(self.run_dir):
            raise existing_run_error(self.run_dir)

        t = cfg.trainer
        self.max_iters = int(t.max_iters)
        self.device = resolve_device(job_device(t.device))
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        init(self.dist)
        self.precision = resolve_precision(t.precision, self.device)
        self.autocast = autocast(self.device, self.precision)
        seed_everything(int(cfg.seed))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        data = load_dataset(**OmegaConf.to_container(cfg.data, resolve=True))
        self.synthetic = data.synthetic
        self.data_name = data.name
        to_dev = {"device": self.device, "non_blocking": True}
        self.train_images = data.train_images.to(**to_dev)
        self.train_labels = data.train_labels.to(**to_dev)
        self.eval_sets = {"test": (data.test_images.to(**to_dev), data.test_labels.to(**to_dev))}
        if data.val_images is not None:
            self.eval_sets["val"] = (data.val_images.to(**to_dev), data.val_labels.to(**to_dev))

        model = build_model(
            cfg.model.name, depth=int(cfg.depth), num_classes=data.num_classes, **model_options_of(cfg)
        )
        self.params = sum(p.numel() for p in model.parameters())
        if self.dist.enabled and t.sync_bn:
            if self.device.type != "cuda":
                raise CnnbenchError(
                    "trainer.sync_bn=true needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on CPUs "
                    "drop it: each process then normalizes over its share of the batch."
                )
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.compiled = resolve_compile(t.compile, self.device, self.max_iters)
        if self.compiled and t.compile == "auto":
            # Chosen for speed, not asked for: where inductor cannot build (no C++ compiler on a
            # laptop), run eagerly instead of failing.
            torch._dynamo.config.suppress_errors = True
        train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = DistributedDataParallel(self.model, device_ids=ids)
        # Static shapes (full batches only) let the compiled graphs be reused every step. Evaluation
        # uses the bare model: only rank 0 evaluates, and DDP's forward would wait for the others.
        self.forward = self._compile(train_model)
        self.eval_forward = self._compile(self.model)

        self.optimizer = build_optimizer(self.model.parameters(), cfg.optimizer)
        self.lr_at = make_lr_schedule(cfg.schedule, float(cfg.optimizer.lr), self.max_iters)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

        self.batches = DeviceBatches(
            self.train_images,
            self.train_labels,
            int(t.batch_size),
            seed=int(cfg.seed),
            shard=(self.dist.rank, self.dist.world_size),
        )
        mean, std = normalization_stats(self.train_images, cfg.data.get("normalize", "pixel_mean"))
        aug_gen = torch.Generator(device=self.device).manual_seed(int(cfg.seed) + 1 + 1000 * self.dist.rank)
        self.augment = BatchAugment(mean, std, int(cfg.augment.padding), bool(cfg.augment.flip), aug_gen)

        # Training-window accumulators live on the device; read only at sync points.
        self.window_loss = torch.zeros((), device=self.device)
        self.window_errors = torch.zeros((), dtype=torch.long, device=self.device)
        self.window_iters = 0
        self.first_bad_iter = torch.full((), -1, dtype=torch.long, device=self.device)
        self.iteration = 0
        self.best_test_error: float | None = None
        self.best_iteration: int | None = None
        self.elapsed = 0.0
        self.metrics: dict[str, Any] = {}
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            if self.dist.rank > 0:  # the checkpoint holds rank 0's augmentation stream
                self.augment.generator.manual_seed(int(cfg.seed) + 1 + 1000 * self.dist.rank + self.iteration)
        self.resumed = checkpoint is not None
        self.restarted = restart

    def _compile(self, module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module, mode="max-autotune-no-cudagraphs") if self.compiled else module

    # ----- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(self.device),
            "sampler": self.batches.state_dict(),
            "augment_rng": self.augment.generator.get_state(),
            "window": {
                "loss": self.window_loss.cpu(),
                "errors": self.window_errors.cpu(),
                "iters": self.window_iters,
            },
            "best_test_error": self.best_test_error,
            "best_iteration": self.best_iteration,
            "elapsed_seconds": self.elapsed,
            "metrics": self.metrics,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CnnbenchError(
                f"The checkpoint in {self.run_dir} does not fit the model/optimizer its config builds "
                f"({str(exc).splitlines()[0][:200]}). Was the config edited? Nothing was changed."
            ) from None
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.device)
        self.batches.load_state_dict(state["sampler"])
        self.augment.generator.set_state(state["augment_rng"])
        window = state["window"]
        self.window_loss = window["loss"].to(self.device)
        self.window_errors = window["errors"].to(self.device)
        self.window_iters = int(window["iters"])
        self.iteration = int(state["iteration"])
        self.best_test_error = state["best_test_error"]
        self.best_iteration = state["best_iteration"]
        self.elapsed = float(state["elapsed_seconds"])
        self.metrics = dict(state["metrics"])

    def checkpoint(self) -> None:
        # Never overwrite the last good checkpoint with NaN weights. A step whose loss was finite can
        # still make the weights non-finite (the next loss is then NaN), so the weights are checked too.
        if int(self.first_bad_iter.item()) < 0 and not self._weights_finite():
            self.first_bad_iter.fill_(self.iteration + 1)
        self._check_finite()
        if self.is_main:
            save_checkpoint(self.state_dict(), self.ckpt_path)

    def _weights_finite(self) -> bool:
        # Parameters only: the next training loss depends on them, not on BatchNorm's running statistics.
        return bool(torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all())

    # ----- steps -----------------------------------------------------------------------------------
    def train_step(self) -> None:
        it = self.iteration
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(it)
        images, labels = self.batches.next()
        x = self.augment(images)
        with self.autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), labels)  # the loss stays in fp32
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        loss = loss.detach()
        self.window_loss += loss
        self.window_errors += (logits.detach().argmax(1) != labels).sum()
        self.window_iters += 1
        bad = ~torch.isfinite(loss) & (self.first_bad_iter < 0)
        self.first_bad_iter = torch.where(bad, it + 1, self.first_bad_iter)
        self.iteration = it + 1

    @torch.inference_mode()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        errors = torch.zeros((), dtype=torch.long, device=self.device)
        for xb, yb in zip(
            images.split(int(self.cfg.trainer.eval_batch_size)),
            labels.split(int(self.cfg.trainer.eval_batch_size)),
            strict=True,
        ):
            with self.autocast():
                logits = self.eval_forward(
                    self.augment.normalize(xb).contiguous(memory_format=torch.channels_last)
                )
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            errors += (logits.argmax(1) != yb).sum()
        self.model.train()
        n = len(labels)
        return loss_sum.item() / n, errors.item() / n

    # ----- sync points -----------------------------------------------------------------------------
    def _check_finite(self) -> None:
        # Every rank reaches the same sync points, so the collective is matched; a NaN on any rank stops all.
        bad = int(all_reduce(self.first_bad_iter, "max").item())
        if bad >= 0:
            raise RunDiverged(
                f"The training loss became non-finite (NaN/inf) at iteration {bad}; the run diverged. "
                f"The last good checkpoint (if any) in {self.run_dir} is kept. Lower optimizer.lr, add a "
                f"warm-up (schedule.warmup_iters=400) or use trainer.precision=fp32."
            )

    def _window_stats(self) -> dict[str, float]:
        self._check_finite()
        n = self.window_iters * int(self.cfg.trainer.batch_size)  # the global batch, over all ranks
        all_reduce(self.window_loss)
        all_reduce(self.window_errors)
        stats = {
            "loss/train": self.window_loss.item() / (self.window_iters * self.dist.world_size),
            "error/train": self.window_errors.item() / n,
        }
        self.window_loss.zero_()
        self.window_errors.zero_()
        self.window_iters = 0
        return stats

    def _write_metrics(self, status: str, **extra: Any) -> None:
        if not self.is_main:
            return
        self.metrics.update(
            status=status,
            model=self.cfg.model.name,
            depth=int(self.cfg.depth),
            params=self.params,
            data=self.data_name,
            synthetic=self.synthetic,
            seed=int(self.cfg.seed),
            iteration=self.iteration,
            max_iters=self.max_iters,
            best_test_error=self.best_test_error,
            best_iteration=self.best_iteration,
            elapsed_seconds=round(self.elapsed, 2),
            **extra,
        )
        for key in ("train_error", "train_loss", "test_error", "test_loss"):
            self.metrics.setdefault(key, None)
        write_json_atomic(self.run_dir / METRICS_NAME, self.metrics)

    # ----- the loop --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        t = self.cfg.trainer
        log_every, eval_every, ckpt_every = int(t.log_every), int(t.eval_every), int(t.ckpt_every)
        tb = TensorBoardLog(
            self.run_dir,
            resume_from=self.iteration if self.resumed or self.restarted else None,
            enabled=self.is_main,
        )
        if self.resumed:
            log.info("Resuming %s at iteration %d/%d", self.run_dir, self.iteration, self.max_iters)
        elif self.is_main:
            env = environment(self.device, self.precision, self.compiled, self.synthetic)
            env["world_size"] = self.dist.world_size
            write_json_atomic(self.run_dir / ENV_NAME, env)
            tb.start(hparams_of(self.cfg, self.params, self.precision, self.synthetic))
        label = f"{self.cfg.model.name}-{self.cfg.depth} on {self.data_name}" + (
            " (SYNTHETIC)" if self.synthetic else ""
        )
        log.info(
            "%s: %s parameters, %s, %s%s, %d iterations of batch %d -> %s",
            label,
            f"{self.params:,}",
            self.device,
            self.precision,
            ", compiled" if self.compiled else "",
            self.max_iters,
            int(t.batch_size),
            self.run_dir,
        )
        self._write_metrics("running", message=None)
        progress = Progress(self.iteration, self.max_iters, label, enabled=self.is_main)
        window_start = time.perf_counter()
        last_tick = window_start
        try:
            with GracefulStop() as stop:
                stopping = False
                while self.iteration < self.max_iters and not stopping:
                    self.train_step()
                    it = self.iteration
                    progress.advance(it)
                    done = it == self.max_iters
                    if it % log_every == 0 or done:
                        window_iters = self.window_iters
                        stats = self._window_stats()
                        now = time.perf_counter()
                        stats["img_per_s"] = window_iters * int(t.batch_size) / max(now - window_start, 1e-9)
                        stats["lr"] = self.lr_at(it - 1)
                        tb.scalars({k: v for k, v in stats.items() if k != "img_per_s"}, it)
                        self.metrics.update(train_loss=stats["loss/train"], train_error=stats["error/train"])
                        progress.report(it, stats)
                        window_start = now
                    if (it % eval_every == 0 or done) and self.is_main:
                        self._evaluate_all(tb, progress)
                        window_start = time.perf_counter()
                    now = time.perf_counter()
                    self.elapsed += now - last_tick
                    last_tick = now
                    if it % ckpt_every == 0 or done:
                        self.checkpoint()
                    if it % eval_every == 0 and not done:
                        self._write_metrics("running")
                    stopping = self._stop_agreed(stop, log_every)
                if stopping and self.iteration < self.max_iters:
                    self.checkpoint()
                    self._write_metrics(
                        "interrupted", message=f"stopped by {signal.Signals(stop.signum).name}"
                    )
                    raise SystemExit(self._interrupted_message(stop.signum))
            self._write_metrics("completed", message=None)
            if not self.is_main:
                return self.metrics
            log.info(
                "Done: train error %.2f%%, test error %.2f%% (best %.2f%% at iteration %s) -> %s",
                100 * self.metrics["train_error"],
                100 * self.metrics["test_error"],
                100 * self.best_test_error,
                self.best_iteration,
                self.run_dir,
            )
            return self.metrics
        except RunDiverged as exc:
            self._write_metrics("diverged", diverged_at=int(self.first_bad_iter.item()), message=str(exc))
            raise
        except KeyboardInterrupt:
            self._write_metrics(
                "interrupted", message="aborted by a second Ctrl-C; resume continues from the last checkpoint"
            )
            raise
        except Exception as exc:
            self._write_metrics("failed", message=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            progress.close()
            tb.close()

    def _stop_agreed(self, stop: GracefulStop, log_every: int) -> bool:
        """Whether to stop after this step. Ranks agree at logging points only (no per-step collective)."""
        if not self.dist.enabled:
            return stop.signum is not None
        if self.iteration % log_every:
            return False
        flag = all_reduce(torch.tensor(stop.signum or 0, device=self.device), "max")
        stop.signum = stop.signum or int(flag.item()) or None
        return stop.signum is not None

    def _evaluate_all(self, tb: TensorBoardLog, progress: Progress) -> None:
        results: dict[str, float] = {}
        for split, (images, labels) in self.eval_sets.items():
            loss, error = self.evaluate(images, labels)
            results[f"loss/{split}"], results[f"error/{split}"] = loss, error
            self.metrics[f"{split}_loss"], self.metrics[f"{split}_error"] = loss, error
        if not math.isfinite(results["loss/test"]):
            log.warning("Test loss is not finite at iteration %d.", self.iteration)
        tb.scalars(results, self.iteration)
        tb.flush()
        error = results["error/test"]
        if self.best_test_error is None or error < self.best_test_error:
            self.best_test_error, self.best_iteration = error, self.iteration
        progress.report(self.iteration, {**results, "lr": self.lr_at(self.iteration - 1)})

    def _interrupted_message(self, signum: int) -> int:
        log.error(
            "Interrupted by %s at iteration %d/%d; checkpoint written. Continue with:\n  cnnbench resume %s",
            signal.Signals(signum).name,
            self.iteration,
            self.max_iters,
            shlex.quote(str(self.run_dir)),  # a command to paste, even with spaces in the path
        )
        return 128 + signum


def run(cfg: DictConfig, run_dir: Path, resume: bool = False, restart: bool = False) -> dict[str, Any]:
    """Train the run described by ``cfg`` in ``run_dir`` (with ``resume``: continue from its checkpoint)."""
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, restart=restart)
    except OmegaConfBaseException as exc:
        # A key the config lacks (e.g. a hand-edited saved config); nothing has been written yet.
        raise CnnbenchError(
            f"The config lacks a key cnnbench needs ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Nothing was changed; restore the key (see `cnnbench config`) in {run_dir / '.hydra'}."
        ) from None
    from cnnbench.distributed import shutdown

    try:
        return trainer.train()
    finally:
        shutdown()
