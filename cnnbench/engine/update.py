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
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: autocast forward, fp32 cross-entropy, backward, step.

    The step of every run, and of the fast-path probe (``cnnbench.fastpath``) that times it.
    """
    with autocast():
        logits = forward(images)
    loss = F.cross_entropy(logits.float(), labels)  # the loss stays in fp32
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()
