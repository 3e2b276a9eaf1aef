"""Cheap checks of a composed config, run before anything is loaded or written."""

from __future__ import annotations

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cnnbench.errors import CnnbenchError


def _positive(cfg: DictConfig, key: str, kind: type = int) -> None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        example = "128" if kind is int else "0.1"
        raise CnnbenchError(
            f"{key}={value!r} must be a positive {'integer' if kind is int else 'number'}; "
            f"set e.g. {key}={example}."
        )


def _check_numerics(cfg: DictConfig) -> None:
    """trainer.tf32, and trainer.bn_group (ghost BatchNorm) dividing every process's batch: no silent
    last, smaller group."""
    from cnnbench.core.distributed import context

    tf32 = cfg.trainer.get("tf32")
    if tf32 is not None and not isinstance(tf32, bool):
        raise CnnbenchError(
            f"trainer.tf32={tf32!r} must be true, false or null (PyTorch's default); set trainer.tf32=false "
            f"for true fp32 arithmetic on GPUs."
        )
    group = cfg.trainer.get("bn_group")
    if group is None:
        return
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        raise CnnbenchError(
            f"trainer.bn_group={group!r} must be a whole number of images >= 1 (BatchNorm statistics per "
            f"group of that many images), or null for the whole batch; set e.g. trainer.bn_group=64."
        )
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
    """Names, depth and the numbers the loop divides by; each failure is one clear CnnbenchError."""
    from cnnbench.core.device import PRECISIONS
    from cnnbench.core.optim import optimizer_kwargs
    from cnnbench.core.schedule import SCHEDULES, make_lr_schedule
    from cnnbench.data import DATASETS
    from cnnbench.data.augment import check_augment
    from cnnbench.models.registry import check_depth, get_model_spec

    try:
        for key in (
            "trainer.batch_size",
            "trainer.max_iters",
            "trainer.eval_every",
            "trainer.log_every",
            "trainer.ckpt_every",
            "trainer.eval_batch_size",
        ):
            _positive(cfg, key)
        _positive(cfg, "optimizer.lr", float)
        every = cfg.trainer.get("log_grad_every", 0)
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise CnnbenchError(
                f"trainer.log_grad_every={every!r} must be a whole number of iterations >= 0 (0 = off); "
                f"set e.g. trainer.log_grad_every=100."
            )
        model_options = {k: v for k, v in cfg.model.items() if k not in ("name", "default_depth")}
        check_depth(get_model_spec(cfg.model.name), cfg.depth, model_options)
        for group, name, valid in (
            ("data", cfg.data.name, DATASETS),
            ("schedule", cfg.schedule.name, SCHEDULES),
        ):
            if name not in valid:
                raise CnnbenchError(
                    f"Unknown {group} {name!r}. Available: {', '.join(sorted(valid))}. "
                    f"Pick one with {group}=<name>."
                )
        optimizer_kwargs(cfg.optimizer)  # the class exists and takes every key
        make_lr_schedule(cfg.schedule, float(cfg.optimizer.lr), int(cfg.trainer.max_iters))
        check_augment(cfg.augment)
        for key, low, high, example in (
            ("label_smoothing", 0.0, 1.0, "0.1"),
            ("ema_decay", 0.0, 1.0, "0.999"),
        ):
            value = cfg.trainer.get(key, 0.0) or 0.0
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value < high:
                raise CnnbenchError(
                    f"trainer.{key}={value!r} must be a number in [{low:g}, {high:g}) (0 = off); "
                    f"set e.g. trainer.{key}={example}."
                )
        if cfg.trainer.precision not in PRECISIONS:
            raise CnnbenchError(
                f"trainer.precision={cfg.trainer.precision!r} is not a precision; "
                f"use one of {', '.join(PRECISIONS)}."
            )
        _check_precision_fits_device(cfg.trainer)
        if int(cfg.augment.padding) < 0:
            raise CnnbenchError(f"augment.padding={cfg.augment.padding} must be >= 0.")
        _check_numerics(cfg)
    except OmegaConfBaseException as exc:
        raise CnnbenchError(
            f"The config lacks a key cnnbench needs ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            f"Compose it from cnnbench's conf/ (see `cnnbench config`), or add the key."
        ) from None
