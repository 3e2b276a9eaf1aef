"""The EMA of the weights (``trainer.ema_decay``) without a host sync per step.

torch's ``AveragedModel.update_parameters`` asks ``bool(self.n_averaged == 0)`` and ``self.n_averaged > 0``
of a device tensor at every call: two host syncs per training step on a GPU. This subclass keeps a host
copy of "has averaged at least once" (read from the tensor once, after building or loading), and from
then on runs exactly torch's averaging branch: the same ``multi_avg_fn`` on the same tensor groups, so
the same arithmetic, bit for bit, and the same state_dict.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype


class SyncFreeAveragedModel(AveragedModel):
    """``AveragedModel`` whose steady-state update never reads ``n_averaged`` back to the host."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started: bool | None = None  # host copy of n_averaged > 0; None: read it at the next update

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        result = super().load_state_dict(*args, **kwargs)
        self._started = None
        return result

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        if self._started is None:
            self._started = bool(self.n_averaged > 0)  # once per build or load
        if not self._started or self.multi_avg_fn is None:
            super().update_parameters(model)  # the first update (a copy), or a non-multi average
            self._started = True
            return
        if self.use_buffers:
            averaged = itertools.chain(self.module.parameters(), self.module.buffers())
            current = itertools.chain(model.parameters(), model.buffers())
        else:
            averaged, current = self.parameters(), model.parameters()
        mine, theirs = [], []
        for p_averaged, p_model in zip(averaged, current, strict=False):
            mine.append(p_averaged.detach())
            theirs.append(p_model.detach().to(p_averaged.device))
        groups = _group_tensors_by_device_and_dtype([mine, theirs])
        for (device, _), ([mine_group, theirs_group], _) in groups.items():
            self.multi_avg_fn(mine_group, theirs_group, self.n_averaged.to(device))
        if not self.use_buffers:
            for b_averaged, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
                b_averaged.detach().copy_(b_model.detach().to(b_averaged.device))
        self.n_averaged += 1
