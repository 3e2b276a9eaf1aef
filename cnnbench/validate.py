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


def check_config(cfg: DictConfig) -> None:
    """Names, depth and the numbers the loop divides by; each failure is one clear CnnbenchError."""
    from cnnbench.data import DATASETS
    from cnnbench.data.augment import check_augment
    from cnnbench.device import PRECISIONS
    from cnnbench.models.registry import check_depth, get_model_spec
    from cnnbench.optim import optimizer_kwargs
    from cnnbench.schedule import SCHEDULES, make_lr_schedule

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
        check_depth(get_model_spec(cfg.model.name), cfg.depth)
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
        if int(cfg.augment.padding) < 0:
            raise CnnbenchError(f"augment.padding={cfg.augment.padding} must be >= 0.")
    except OmegaConfBaseException as exc:
        raise CnnbenchError(
            f"The config lacks a key cnnbench needs ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            f"Compose it from cnnbench's conf/ (see `cnnbench config`), or add the key."
        ) from None
