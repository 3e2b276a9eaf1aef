"""The optimizer of the `optimizer` config group, instantiated from its ``_target_``.

Adding an optimizer is one YAML file in ``conf/optimizer/``: ``_target_`` names the class (any
``torch.optim`` optimizer, or one importable from elsewhere), ``name`` is the label reports and
TensorBoard show, and every other key is a keyword argument of the class (``lr``, ``momentum``, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from cnnbench.errors import CnnbenchError

# Keys of the optimizer section that are cnnbench's, not the class's.
OWN_KEYS = ("name", "_target_", "no_decay_bn_bias")
# Configs saved before optimizers had a _target_ (runs resumed from older versions).
LEGACY_TARGETS = {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"}


def optimizer_class(cfg: Mapping) -> type[torch.optim.Optimizer]:
    """The class ``cfg._target_`` names; a clear error when it does not name an optimizer."""
    from hydra.utils import get_class

    target = cfg.get("_target_") or LEGACY_TARGETS.get(str(cfg.get("name")))
    if not target:
        raise CnnbenchError(
            f"optimizer {cfg.get('name')!r} has no _target_; pick one of the optimizer configs "
            f"(optimizer=sgd, optimizer=adam, ...) or give its class, e.g. "
            f"+optimizer._target_=torch.optim.RMSprop."
        )
    try:
        cls = get_class(str(target))
    except Exception:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise CnnbenchError(
            f"optimizer._target_={target!r} is not an importable torch.optim.Optimizer class; use e.g. "
            f"torch.optim.SGD or torch.optim.AdamW."
        )
    return cls


def optimizer_kwargs(cfg: Mapping) -> dict[str, Any]:
    """The class's keyword arguments: every key but cnnbench's own, checked against its signature."""
    from omegaconf import DictConfig, OmegaConf

    cls = optimizer_class(cfg)
    items = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in items.items() if k not in OWN_KEYS}
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        valid = [p for p in accepted if p not in ("self", "params")]
        raise CnnbenchError(
            f"optimizer.{unknown[0]} is not an argument of {cfg.get('_target_') or cls.__name__} "
            f"(optimizer={cfg.get('name')}); its arguments are: {', '.join(valid)}. Remove the key or pick "
            f"another optimizer."
        )
    return kwargs


def param_groups(model: torch.nn.Module, no_decay_bn_bias: bool) -> Iterable:
    """All parameters as one group (the paper: weight decay on every parameter), or, with
    ``no_decay_bn_bias``, BatchNorm weights and all biases (the 1-D parameters) without weight decay."""
    if not no_decay_bn_bias:
        return model.parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    """``cfg._target_(params, **kwargs)``: e.g. the paper's SGD (lr 0.1, momentum 0.9, weight decay 1e-4)."""
    groups = param_groups(model, bool(cfg.get("no_decay_bn_bias", False)))
    return optimizer_class(cfg)(groups, **optimizer_kwargs(cfg))
