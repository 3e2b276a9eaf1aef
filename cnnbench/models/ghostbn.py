"""Ghost BatchNorm: BatchNorm2d whose training-mode statistics come from groups of images of the batch.

He et al. 2016 trained on two GPUs with 64 images each, so every BatchNorm layer normalized over 64
images, not the 128 of the whole batch. ``use_ghost_bn(model, 64)`` gives a one-device run the same
numerics: in training mode each group of 64 consecutive images of the (per-process) batch is normalized
with its own mean and variance; in eval mode the layer is an ordinary BatchNorm2d (running statistics).

Running statistics are updated from the **first group only**, as they were on the paper's multi-GPU
setups: there every GPU ran its own copy of the layer, and only the first GPU's copy was kept (Caffe's
root solver, which tests and snapshots; Torch's DataParallelTable and PyTorch's DataParallel, whose
replicas' buffers are discarded; DistributedDataParallel, which broadcasts rank 0's buffers at every
forward). An average over the groups would be a smoother estimate, but not what the paper's nets saw at
test time. With one group (group = batch) the layer is exactly ``nn.BatchNorm2d``, bit for bit.

The parameters and buffers stay those of the BatchNorm2d it replaces (same objects, same state_dict
keys), so checkpoints, ``cnnbench eval`` and export, which rebuild plain BatchNorm2d, are unaffected.
Under torchrun every process groups its own share of the batch (DDP: per-rank groups).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalizes groups of ``group`` images separately in training mode."""

    def __init__(self, num_features: int, group: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group = int(group)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group={self.group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shape-only branching (static under torch.compile): no data-dependent control flow.
        if not self.training or x.shape[0] <= self.group:
            return super().forward(x)
        chunks = x.split(self.group)  # a batch that the group does not divide ends with a smaller group
        # The first group goes through BatchNorm2d itself: its statistics (and only its) update the running
        # ones and num_batches_tracked, as GPU 0's layer did. The others: batch statistics, no update.
        first = super().forward(chunks[0])
        rest = [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks[1:]]
        return torch.cat([first, *rest])


def use_ghost_bn(model: nn.Module, group: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``model`` (in place) by a ``GhostBatchNorm2d`` of ``group`` images.

    The new layers take over the old ones' parameters and buffers (the same tensors): initialization and
    state_dict are unchanged. Returns ``model``.
    """
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, _ghost(child, group))
        else:
            use_ghost_bn(child, group)
    return model


def _ghost(bn: nn.BatchNorm2d, group: int) -> GhostBatchNorm2d:
    ghost = GhostBatchNorm2d(
        bn.num_features,
        group,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )
    # The same Parameter and buffer objects: an optimizer built before the swap would still see them.
    ghost._parameters = bn._parameters
    ghost._buffers = bn._buffers
    ghost._non_persistent_buffers_set = bn._non_persistent_buffers_set
    ghost.train(bn.training)
    return ghost
