"""The checks of a composed config's values, before anything is loaded or written.

``check_values`` walks a composed config and refuses the first bad value with one paragraph: the key,
the value, what is allowed and the closest valid value (the table: ``cnnbench.rundir.values``). Keys whose
values only a class knows (a model family's options, an optimizer's arguments) are checked by that class
itself, on a meta-device model and a one-parameter optimizer (``check_by_construction``): the rule then
is exactly the one training would meet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.value_rules import Rule, shown
from cnnbench.rundir.values import rules


def leaves(config: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) leaf of a plain (resolved) config; lists are leaves."""
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, dotted + ".")
        else:
            yield dotted, value


def refusal(key: str, value: Any, rule: Rule) -> CnnbenchError:
    near = rule.suggestion(value)
    problem = "is not a number" if isinstance(value, str) and "number" in rule.allowed else "is not allowed"
    usual = f" (a usual value: {shown(rule.example)})" if shown(rule.example) != shown(near) else ""
    return CnnbenchError(
        f"{key}={shown(value)} {problem}: {key} must be {rule.allowed}. The closest valid value is "
        f"{key}={shown(near)}{usual}. Nothing was written."
    )


def check_values(config: Mapping) -> None:
    """Refuse the first leaf of ``config`` (a resolved, plain mapping) whose value its rule does not allow.

    Keys outside the table are left to their owners: model options and optimizer arguments to
    ``check_by_construction``, the sections' names to Hydra (a key the composed config lacks is refused
    when the override is applied).
    """
    table = rules()
    for key, value in leaves(config):
        rule = table.get(key)
        if rule is not None and not rule.allows(value):
            raise refusal(key, value, rule)


def check_by_construction(config: Mapping) -> None:
    """The model on the meta device (no memory, no time) and the optimizer over one parameter: the
    families' and the optimizer class's own checks, each failure one paragraph naming the section."""
    import torch

    from cnnbench.core.optim import optimizer_class, optimizer_kwargs
    from cnnbench.models.registry import build_model

    model = config["model"]
    options = {k: v for k, v in model.items() if k not in ("name", "default_depth")}
    try:
        with torch.device("meta"):
            build_model(str(model["name"]), config["depth"], 10, **options)
    except CnnbenchError:
        raise
    except Exception as exc:  # a family's own refusal, in its words
        given = " ".join(f"model.{k}={shown(v)}" for k, v in options.items())
        raise CnnbenchError(
            f"model={model['name']} depth={config['depth']} {given} cannot be built: {exc}. Check these "
            f"options (`cnnbench config model={model['name']}` shows the defaults)."
        ) from None
    kwargs = optimizer_kwargs(config["optimizer"])
    cls = optimizer_class(config["optimizer"])
    try:
        cls([torch.zeros(1, requires_grad=True)], **kwargs)
    except Exception as exc:  # torch's own refusal (e.g. nesterov without momentum)
        given = " ".join(f"optimizer.{k}={shown(v)}" for k, v in kwargs.items())
        target = config["optimizer"].get("_target_") or cls.__name__
        raise CnnbenchError(
            f"{target} refuses {given}: {exc}. Change the value it names "
            f"(`cnnbench config optimizer={config['optimizer'].get('name')}` shows the defaults)."
        ) from None
