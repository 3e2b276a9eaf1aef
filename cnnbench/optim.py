"""Optimizers by name, from the `optimizer` config group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from cnnbench.errors import CnnbenchError

OPTIMIZERS = ("sgd", "adam")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping) -> torch.optim.Optimizer:
    """SGD as in the paper (momentum 0.9, weight decay 1e-4 on every parameter) or Adam."""
    name = cfg.get("name")
    lr = float(cfg["lr"])
    weight_decay = float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=float(cfg.get("momentum", 0.0)),
            weight_decay=weight_decay,
            nesterov=bool(cfg.get("nesterov", False)),
        )
    if name == "adam":
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise CnnbenchError(
        f"Unknown optimizer {name!r}. Available optimizers: {', '.join(OPTIMIZERS)}. "
        f"Pick one with optimizer=<name>."
    )
