"""The evaluation loop: a model's mean loss, error and (when asked) confusion counts on uint8 images.

One loop for training's evaluations (``engine.step.evaluate``), `cnnbench eval` and `cnnbench bench`, so
a run's logged test error and `cnnbench eval`'s are the same arithmetic: fp32 logits, the cross-entropy
summed in float64 on the device and read once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Evaluated:
    loss: float  # mean over the images
    error: float  # fraction misclassified
    confusion: torch.Tensor | None  # (true, predicted) counts on the CPU, when num_classes was given


@torch.inference_mode()
def evaluate_images(
    forward: Callable[[torch.Tensor], torch.Tensor],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager],
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
    tta: str = "none",
    num_classes: int | None = None,
) -> Evaluated:
    """Evaluate ``forward`` (the model in eval mode) on uint8 ``images`` in batches of ``batch_size``.

    ``normalize`` turns a uint8 batch into the model's input (in ``memory_format``). ``tta="flip"``:
    the softmax is averaged over each image and its horizontal mirror (mirrored after normalization, as
    training's flip augmentation does), and the loss is the negative log of that averaged probability.
    ``num_classes``: also count the (true, predicted) pairs.
    """
    device = images.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    errors = torch.zeros((), dtype=torch.long, device=device)
    confusion = None if num_classes is None else torch.zeros(num_classes**2, dtype=torch.long, device=device)
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        x = normalize(xb)
        with autocast():
            logits = forward(x)
        if tta == "flip":
            with autocast():
                mirrored = forward(x.flip(3).contiguous(memory_format=memory_format))
            log_probs = torch.stack([logits.float().log_softmax(1), mirrored.float().log_softmax(1)])
            log_probs = log_probs.logsumexp(0) - math.log(2.0)
            loss_sum += F.nll_loss(log_probs, yb, reduction="sum").double()
            predicted = log_probs.argmax(1)
        else:
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            predicted = logits.argmax(1)
        errors += (predicted != yb).sum()
        if confusion is not None:
            confusion += torch.bincount(yb * num_classes + predicted, minlength=num_classes**2)
    n = max(len(labels), 1)
    counts = None if confusion is None else confusion.view(num_classes, num_classes).cpu()
    return Evaluated(loss_sum.item() / n, errors.item() / n, counts)
