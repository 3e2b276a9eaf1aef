"""Cheap checks of a composed config, run before anything is loaded or written."""

from __future__ import annotations

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cnnbench.errors import CnnbenchError


def _check_numerics(cfg: DictConfig) -> None:
    """trainer.bn_group (ghost BatchNorm) divides every process's batch: no silent last, smaller group."""
    from cnnbench.core.distributed import context

    group = cfg.trainer.get("bn_group")  # its type and range: cnnbench.rundir.values
    if group is None:
        return
    batch, world = int(cfg.trainer.batch_size), context().world_size
    local = batch // world  # each process normalizes its own share (DDP: per-rank groups)
    where = f"trainer.batch_size={batch}"
    if world > 1:
        where = f"each process's {local} images ({where} over {world} processes)"
    if local % group:
        divisors = [d for d in (64, 32, 16, 8) if d < local and local % d == 0]  # 64: the paper's
        example = f"e.g. trainer.bn_group={divisors[0]}, " if divisors else ""
        raise CnnbenchError(
            f"trainer.bn_group={group} does not divide {where}: BatchNorm would normalize groups of {group} "
            f"images and one smaller group, unlike the equal GPUs it stands for. Choose a group that divides "
            f"the batch ({example}or a batch size that is a multiple of {group}), or trainer.bn_group=null "
            f"to normalize over the whole batch."
        )
    if world > 1 and cfg.trainer.get("sync_bn"):
        raise CnnbenchError(
            f"trainer.bn_group={group} and trainer.sync_bn=true ask for opposite BatchNorm statistics "
            f"(groups of {group} images vs the whole batch over all processes); drop one of them."
        )


def _check_precision_fits_device(trainer: DictConfig) -> None:
    """fp16 autocast on a CPU has no fast kernels: a run would crawl with no output and look hung."""
    if trainer.precision != "fp16" or trainer.get("allow_slow_precision", False):
        return
    from cnnbench.core.device import resolve_device

    if resolve_device(trainer.device).type == "cpu":
        raise CnnbenchError(
            "trainer.precision=fp16 on a CPU: PyTorch has no fast fp16 kernels there, so training runs "
            "orders of magnitude slower than in bf16 and looks hung. Use trainer.precision=bf16 (the same "
            "memory, fp32's range) or auto (the fastest measured on this machine), or add "
            "trainer.allow_slow_precision=true to train in fp16 on the CPU anyway (e.g. to study its "
            "numerics)."
        )


def check_config(cfg: DictConfig) -> None:
    """Every value (cnnbench.rundir.values), then what depends on several keys; each failure is one clear
    CnnbenchError, raised before anything is loaded or written."""
    from omegaconf import OmegaConf

    from cnnbench.core.optim import optimizer_kwargs
    from cnnbench.core.schedule import make_lr_schedule
    from cnnbench.data.augment import check_augment
    from cnnbench.models.registry import check_depth, get_model_spec
    from cnnbench.rundir.value_checks import check_by_construction, check_values

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        # The depth first: its refusal names the family's rule and the valid depths near the value.
        model_options = {k: v for k, v in cfg.model.items() if k not in ("name", "default_depth")}
        check_depth(get_model_spec(cfg.model.name), cfg.depth, model_options)
        check_values(plain)
        optimizer_kwargs(cfg.optimizer)  # the class exists and takes every key
        make_lr_schedule(cfg.schedule, float(cfg.optimizer.lr), int(cfg.trainer.max_iters))
        check_augment(cfg.augment)
        _check_precision_fits_device(cfg.trainer)
        _check_numerics(cfg)
        check_by_construction(plain)
    except OmegaConfBaseException as exc:
        raise CnnbenchError(
            f"The config lacks a key cnnbench needs ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            f"Compose it from cnnbench's conf/ (see `cnnbench config`), or add the key."
        ) from None
