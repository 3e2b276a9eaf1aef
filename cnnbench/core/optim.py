"""The optimizer of the `optimizer` config group, instantiated from its ``_target_``.

Adding an optimizer is one YAML file in ``conf/optimizer/``: ``_target_`` names the class (any
``torch.optim`` optimizer, or one importable from elsewhere), ``name`` is the label reports and
TensorBoard show, and every other key is a keyword argument of the class (``lr``, ``momentum``, ...).

Importing a ``_target_`` runs its module's code. A config the user composed (conf/ and the command line)
is theirs to choose; a config read back from a run or sweep folder (``cnnbench resume``) may come from
anyone who could write that folder, so ``check_saved_target`` lets it name only a class of
``torch.optim`` unless the user trusts it (``CNNBENCH_TRUST_TARGETS``).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from cnnbench.errors import CnnbenchError

# Keys of the optimizer section that are cnnbench's, not the class's.
OWN_KEYS = ("name", "_target_", "no_decay_bn_bias")
# Configs saved before optimizers had a _target_ (runs resumed from older versions).
LEGACY_TARGETS = {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"}
# 1 (or true, yes): trust every _target_ of saved configs; else a comma-separated list of trusted ones.
TRUST_ENV = "CNNBENCH_TRUST_TARGETS"
# A class of torch.optim (or of its submodules): importing it runs only torch's own code.
_TORCH_OPTIM = re.compile(r"torch\.optim(\.[A-Za-z_][A-Za-z0-9_]*)+")


def trusted_target(target: str) -> bool:
    """Whether a ``_target_`` read from a run folder may be imported: a torch.optim class, or one the user
    trusts through ``CNNBENCH_TRUST_TARGETS``."""
    if _TORCH_OPTIM.fullmatch(target):
        return True
    trusted = os.environ.get(TRUST_ENV, "").strip()
    if trusted.lower() in ("1", "true", "yes"):
        return True
    return target in {t.strip() for t in trusted.split(",") if t.strip()}


def check_saved_target(cfg: Mapping, where: object) -> None:
    """Refuse, before anything imports it, an ``optimizer._target_`` of a config read from ``where`` (a run
    or sweep folder's file) that is not a torch.optim class and that the user has not trusted."""
    target = cfg.get("_target_")
    if not target or trusted_target(str(target)):
        return
    module = str(target).rpartition(".")[0] or str(target)
    raise CnnbenchError(
        f"{where} names optimizer._target_={str(target)!r}, which is not a torch.optim class; importing it "
        f"would run the code of the module {module!r}, chosen by whoever wrote that file, so nothing was "
        f"imported or changed. If you trust this folder, allow the class with "
        f"{TRUST_ENV}={target} (or {TRUST_ENV}=1 for any class) and run the command again."
    )


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


def supports_fused(cfg: Mapping) -> bool:
    """Whether the optimizer class takes ``fused=True`` (SGD, Adam, AdamW, ... in recent torch)."""
    return "fused" in inspect.signature(optimizer_class(cfg).__init__).parameters


def build_optimizer(
    model: torch.nn.Module, cfg: Mapping, fused: bool = False, lr_tensor: bool = False
) -> torch.optim.Optimizer:
    """``cfg._target_(params, **kwargs)``: e.g. the paper's SGD (lr 0.1, momentum 0.9, weight decay 1e-4).

    ``fused``: the class's fused implementation (one kernel for all parameters) instead of its default
    (foreach). ``lr_tensor``: the learning rate as one fp32 tensor on the parameters' device, shared by
    every group and written in place by ``set_lr`` (a captured CUDA graph reads it; a float would be
    frozen into the graph). Without either, the optimizer is exactly the one the config names.
    """
    groups = param_groups(model, bool(cfg.get("no_decay_bn_bias", False)))
    kwargs = optimizer_kwargs(cfg)
    if fused:
        if not supports_fused(cfg):
            raise CnnbenchError(
                f"trainer.fused_optimizer=true but {cfg.get('_target_')} has no fused implementation; "
                f"set trainer.fused_optimizer=auto (or false), or use optimizer=sgd / adam / adamw."
            )
        kwargs["fused"] = True
        if kwargs.get("foreach"):
            kwargs["foreach"] = None  # torch refuses fused and foreach together
    if lr_tensor:
        if not fused:
            raise ValueError("a tensor lr needs the fused implementation (foreach reads it back per step)")
        device = next(model.parameters()).device
        kwargs["lr"] = torch.tensor(float(kwargs.get("lr", 1e-3)), dtype=torch.float32, device=device)
    optimizer = optimizer_class(cfg)(groups, **kwargs)
    _keep_implementation(optimizer)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Every group's learning rate to ``value``: a float assigned, or the lr tensor filled in place.

    ``fill_`` with a Python number is one tiny kernel with the value as its argument: no host sync, and a
    captured graph that reads the tensor sees the new value at its next replay.
    """
    done: set[int] = set()
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not isinstance(lr, torch.Tensor):
            group["lr"] = value
        elif id(lr) not in done:
            lr.fill_(value)
            done.add(id(lr))


# The keys of a param group that say how this run's optimizer computes, not what: kept on load.
IMPLEMENTATION_KEYS = ("fused", "foreach")


def _keep_implementation(optimizer: torch.optim.Optimizer) -> None:
    """Checkpoints hold a float lr, and a loaded state keeps this run's implementation and lr tensor.

    ``load_state_dict`` replaces each param group with the saved one, which would bring back the saved
    ``fused``/``foreach`` flags and a float (or host tensor) lr. So: saving writes the lr as a float (the
    format of every checkpoint before tensor lrs: old and new ones load both ways), and loading puts this
    run's flags and lr tensor back, the tensor filled with the loaded value.
    """
    built = [{k: g.get(k) for k in IMPLEMENTATION_KEYS} for g in optimizer.param_groups]
    tensors = [g["lr"] if isinstance(g["lr"], torch.Tensor) else None for g in optimizer.param_groups]

    def as_floats(_optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        for group in state["param_groups"]:
            if isinstance(group.get("lr"), torch.Tensor):
                group["lr"] = float(group["lr"].item())  # a copy of the group: the live one is untouched
        return state

    def restore(_optimizer: torch.optim.Optimizer) -> None:
        for group, flags, tensor in zip(_optimizer.param_groups, built, tensors, strict=True):
            group.update(flags)
            if tensor is not None:
                tensor.fill_(float(group["lr"]))
                group["lr"] = tensor
            # Adam's step counter lives on the parameter's device for fused/capturable steps, on the CPU
            # otherwise; torch placed it by the saved flags: place it by this run's.
            on_device = bool(group.get("fused") or group.get("capturable"))
            for param in group["params"]:
                step = _optimizer.state.get(param, {}).get("step")
                want = param.device if on_device else torch.device("cpu")
                if isinstance(step, torch.Tensor) and step.device != want:
                    _optimizer.state[param]["step"] = step.to(want)

    optimizer.register_state_dict_post_hook(as_floats)
    optimizer.register_load_state_dict_post_hook(restore)
