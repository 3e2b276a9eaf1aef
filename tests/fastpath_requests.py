"""The fast path asked as a run asks it, from a ``trainer`` section alone (the fast-path tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cnnbench.fastpath.choice import FastPath
from cnnbench.fastpath.request import FastPathRequest
from cnnbench.fastpath.resolve import resolve as resolve_request

SGD = {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
NOT_FUSED = {"_target_": "torch.optim.RMSprop", "lr": 0.01}  # no fused implementation in torch


def resolve(
    trainer: Mapping[str, Any],
    device: torch.device,
    recorded: Mapping[str, Any] | None = None,
    sweep_record: Path | None = None,
    *,
    optimizer: Mapping[str, Any] = SGD,
    distributed: bool = False,
) -> FastPath:
    """The fast path of a run with these ``trainer`` settings and ``optimizer`` (a ResNet without
    stochastic depth); ``distributed``: under torchrun (no captured update)."""
    cfg = OmegaConf.create(
        {"trainer": dict(trainer), "optimizer": dict(optimizer), "model": {"name": "resnet"}}
    )
    request = FastPathRequest.from_config(cfg, recorded, sweep_record, device=device, distributed=distributed)
    return resolve_request(request)
