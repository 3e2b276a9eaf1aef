"""The model update of one iteration, shared by the training step and the fast-path probe."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F


def model_step(
    forward: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    autocast: Callable[[], contextlib.AbstractContextManager],
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: autocast forward, fp32 loss, backward, step.

    The loss is ``loss_fn(fp32 logits)`` (mixing, label smoothing), or the cross-entropy with
    ``labels``. The step of every run, and of the fast-path probe (``cnnbench.fastpath``) that times it.
    """
    with autocast():
        logits = forward(images)
    # The loss stays in fp32.
    loss = loss_fn(logits.float()) if loss_fn is not None else F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()
