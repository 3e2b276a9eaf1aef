"""One training iteration (``TrainStep``) and the evaluation pass (``evaluate``).

``TrainStep`` is what `cnnbench train` runs and what `cnnbench bench` times, the same object. It keeps
the loss and error of the current logging window in device tensors, read only at sync points (logging,
evaluation, checkpoints), so an iteration never waits for the device: nothing in ``__call__`` reads a
tensor back to the host (no ``.item()``, no ``bool(tensor)``, no data-dependent shapes;
``tests/test_fastpath.py`` counts them on the CPU, ``tests/test_cuda_fastpath.py`` asks CUDA's sync
debug mode). With ``trainer.cuda_graphs`` the model update is one captured CUDA graph
(``update/graphs.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnbench.core.device import autocast
from cnnbench.core.distributed import all_reduce
from cnnbench.core.optim import set_lr
from cnnbench.data.mixing import dominant_targets, mixed_cross_entropy
from cnnbench.engine.evaluation import evaluate_images
from cnnbench.engine.gradflow import GradFlow
from cnnbench.engine.parts import Parts
from cnnbench.errors import CnnbenchError
from cnnbench.update.graphs import GraphedUpdate
from cnnbench.update.step import model_step


class RunDiverged(CnnbenchError):
    exit_code = 3


class TrainStep:
    """``step(iteration)``: set the lr, sample and augment a batch, update the model, accumulate stats."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        device = parts.device
        self.window_loss = torch.zeros((), device=device)
        self.window_errors = torch.zeros((), dtype=torch.long, device=device)
        self.window_iters = 0
        # The first iteration (1-based) whose loss or weights were not finite; -1 while all are.
        self.first_bad_iter = torch.full((), -1, dtype=torch.long, device=device)
        # Gradient/weight norms every trainer.log_grad_every steps (0 or absent: off).
        self.gradflow = GradFlow(parts.model, int(parts.cfg.trainer.get("log_grad_every") or 0))
        # trainer.cuda_graphs: one captured update per kind of loss ("plain", "mixed"), made at first use.
        self.graphs: dict[str, GraphedUpdate] = {}
        self._graph_autocast = autocast(device, parts.fast_path.precision, cache=False)

    def update(
        self, images: torch.Tensor, labels: torch.Tensor, loss_fn: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and optimizer step on one augmented batch; returns (loss, logits), detached.

        The model step alone: `cnnbench bench` times it on a resident batch as the "pure" step. The
        loss is ``loss_fn(logits)`` or the cross-entropy with ``labels`` (with the run's label smoothing).
        """
        p = self.parts
        if p.cuda_graphs and loss_fn is None:
            result = self._graphed("plain", self._plain_update)(images, labels)
        else:
            if loss_fn is None and p.label_smoothing:
                loss_fn = functools.partial(F.cross_entropy, target=labels, label_smoothing=p.label_smoothing)
            result = model_step(p.train_forward, p.optimizer, p.scaler, p.autocast, images, labels, loss_fn)
        if p.ema is not None:
            p.ema.update_parameters(p.model)
        return result

    def update_mixed(
        self, images: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The update on a mixed batch: the loss mixes the two labels' losses with weight ``lam``."""
        p = self.parts
        if not p.cuda_graphs:
            return self.update(images, labels_a, self._mixed_loss(labels_a, labels_b, lam))
        result = self._graphed("mixed", self._mixed_update)(images, labels_a, labels_b, lam)
        if p.ema is not None:
            p.ema.update_parameters(p.model)
        return result

    def _mixed_loss(self, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: torch.Tensor) -> Callable:
        """The loss of a mixed batch: the two labels' losses mixed with weight ``lam``."""
        return functools.partial(
            mixed_cross_entropy,
            targets_a=labels_a,
            targets_b=labels_b,
            lam=lam,
            label_smoothing=self.parts.label_smoothing,
        )

    # The updates a CUDA graph captures: the same model_step and losses as the eager path.
    def _graphed(self, kind: str, update: Callable) -> GraphedUpdate:
        if kind not in self.graphs:
            self.graphs[kind] = GraphedUpdate(update)
        return self.graphs[kind]

    def _plain_update(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.parts
        loss_fn = None
        if p.label_smoothing:
            loss_fn = functools.partial(F.cross_entropy, target=labels, label_smoothing=p.label_smoothing)
        return model_step(
            p.train_forward, p.optimizer, p.scaler, self._graph_autocast, images, labels, loss_fn
        )

    def _mixed_update(
        self, images: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.parts
        loss_fn = self._mixed_loss(labels_a, labels_b, lam)
        return model_step(
            p.train_forward, p.optimizer, p.scaler, self._graph_autocast, images, labels_a, loss_fn
        )

    def __call__(self, iteration: int) -> None:
        """Train iteration ``iteration`` (0-based)."""
        p = self.parts
        # A float per group, or the lr tensor a captured graph reads, filled in place (no host sync).
        set_lr(p.optimizer, p.lr_at(iteration))
        images, labels = p.batches.next()
        x = p.augment(images)
        if p.mix.enabled:
            # Mixed batches: the loss mixes the two labels' losses; the training error counts against
            # the label with the larger share (docs/design.md), all on the device.
            x, labels_a, labels_b, lam = p.mix(x, labels)
            loss, logits = self.update_mixed(x, labels_a, labels_b, lam)
            labels = dominant_targets(labels_a, labels_b, lam)
        else:
            loss, logits = self.update(x, labels)
        self.window_loss += loss
        self.window_errors += (logits.argmax(1) != labels).sum()
        self.window_iters += 1
        bad = ~torch.isfinite(loss) & (self.first_bad_iter < 0)
        self.first_bad_iter = torch.where(bad, iteration + 1, self.first_bad_iter)
        if self.gradflow.due(iteration + 1):
            self.gradflow.record(iteration + 1)  # on the device; read when the loop logs

    # ----- sync points -----------------------------------------------------------------------------
    def mark_bad_weights(self, iteration: int) -> None:
        """Flag non-finite parameters (a finite loss can still leave NaN weights: the next loss is NaN)."""
        if int(self.first_bad_iter.item()) >= 0:
            return
        # Parameters only: the next training loss depends on them, not on BatchNorm's running statistics.
        params = [p.detach().isfinite().all() for p in self.parts.model.parameters()]
        if not bool(torch.stack(params).all()):
            self.first_bad_iter.fill_(iteration + 1)

    def diverged_at(self) -> int | None:
        """The first non-finite iteration over all ranks (a collective: every rank must call it)."""
        bad = int(all_reduce(self.first_bad_iter, "max").item())
        return bad if bad >= 0 else None

    def window_stats(self) -> dict[str, float]:
        """Mean training loss and error over the window since the last call (over all ranks); resets it."""
        world = self.parts.dist.world_size
        n = self.window_iters * self.parts.batch_size  # the global batch, over all ranks
        all_reduce(self.window_loss)
        all_reduce(self.window_errors)
        stats = {
            "loss/train": self.window_loss.item() / (self.window_iters * world),
            "error/train": self.window_errors.item() / n,
        }
        self.window_loss.zero_()
        self.window_errors.zero_()
        self.window_iters = 0
        return stats

    # ----- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "loss": self.window_loss.cpu(),
            "errors": self.window_errors.cpu(),
            "iters": self.window_iters,
        }

    def load_state_dict(self, window: dict[str, Any]) -> None:
        self.window_loss = window["loss"].to(self.parts.device)
        self.window_errors = window["errors"].to(self.parts.device)
        self.window_iters = int(window["iters"])


def evaluate(
    parts: Parts, images: torch.Tensor, labels: torch.Tensor, ema: bool = False
) -> tuple[float, float]:
    """Mean loss and error of the model (eval mode) on uint8 ``images``, in batches of eval_batch_size
    (``engine.evaluation``, the loop `cnnbench eval` uses too).

    ``ema``: of the weights' moving average instead (``trainer.ema_decay``).
    """
    model = parts.ema.module if ema else parts.model
    model.eval()
    try:
        evaluated = evaluate_images(
            model if ema else parts.eval_forward,
            parts.augment.normalize,
            images,
            labels,
            int(parts.cfg.trainer.eval_batch_size),
            parts.autocast,
        )
    finally:
        model.train()
    return evaluated.loss, evaluated.error
