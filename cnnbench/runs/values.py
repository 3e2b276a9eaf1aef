"""The allowed values of every key of the composed config, checked before anything is loaded or written.

One table, ``RULES``, says for each leaf key what it may hold (type, range, choices). ``check_values``
walks a composed config and refuses the first bad value with one paragraph: the key, the value, what is
allowed and the closest valid value. Keys whose values only a class knows (a model family's options, an
optimizer's arguments) are checked by that class itself, on a meta-device model and a one-parameter
optimizer (``check_by_construction``): the rule then is exactly the one training would meet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnbench.errors import CnnbenchError

# The deepest net of the papers cnnbench reproduces is ResNet-1202; far deeper ones take minutes to build.
MAX_DEPTH = 2000
# numpy's seed range (torch's is wider): a seed every library takes as it is.
MAX_SEED = 2**32 - 1
# Far beyond any run: 64k iterations is the paper's; 10^9 at 1000 it/s is eleven days.
MAX_ITERS = 10**9
MAX_IMAGES = 10**7  # a batch, an evaluation batch or a synthetic data set (it lives in memory)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_number(value: Any) -> float | None:
    """What a user most likely meant by a string such as ``32k``, ``1.5M``, ``1e-4`` or ``64_000``."""
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*([-+]?[\d_]*\.?\d+(?:e[-+]?\d+)?)\s*([kKmM]?)\s*", value)
    if not match:
        return None
    try:
        number = float(match.group(1).replace("_", ""))
    except ValueError:
        return None
    return number * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]


def _shown(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value)) if abs(value) >= 1e4 else repr(value)
    return str(value) if not isinstance(value, str) else (value if value else "''")


@dataclass(frozen=True)
class Rule:
    """What one key may hold: ``allows(value)``, in words ``allowed``, and for a bad value the closest valid
    one (``closest``, None when there is none to compute) or else ``example``."""

    allowed: str
    allows: Callable[[Any], bool]
    example: Any
    closest: Callable[[Any], Any] | None = None

    def suggestion(self, value: Any) -> Any:
        if self.closest is not None:
            try:
                near = self.closest(value)
            except (TypeError, ValueError, OverflowError):
                near = None
            if near is not None and self.allows(near):
                return near
        return self.example


def whole(low: int, high: int, example: int, *, nullable: bool = False, what: str = "") -> Rule:
    """A whole number in [low, high] (``nullable``: or null)."""

    def allows(value: Any) -> bool:
        return (nullable and value is None) or (_is_whole(value) and low <= value <= high)

    def closest(value: Any) -> int | None:
        number = parse_number(value)
        if number is None or not math.isfinite(number):
            return None
        return int(min(max(round(number), low), high))

    text = f"a whole number{what} from {low:,} to {high:,}" + (", or null" if nullable else "")
    return Rule(text, allows, example, closest)


def number(
    low: float,
    high: float = math.inf,
    example: float = 0.0,
    *,
    low_open: bool = False,
    high_open: bool = False,
    nullable: bool = False,
    what: str = "",
) -> Rule:
    """A finite number in the interval (open ends excluded); ``nullable``: or null; ``what``: the number
    in words, for the message."""

    def inside(x: float) -> bool:
        above = x > low if low_open else x >= low
        below = x < high if high_open else x <= high
        return math.isfinite(x) and above and below

    def allows(value: Any) -> bool:
        return (nullable and value is None) or (_is_number(value) and inside(float(value)))

    def closest(value: Any) -> float | None:
        x = parse_number(value)
        if x is None or math.isnan(x):
            return None
        if inside(x):
            return x
        if x <= low:  # an open bound has no closest value: the example stands in
            return None if low_open else low
        return None if high_open or not math.isfinite(high) else high

    if high == math.inf:
        interval = f"{'>' if low_open else '>='} {low:g}"
    else:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    text = f"{what or 'a finite number'} {interval}" + (", or null" if nullable else "")
    return Rule(text, allows, example, closest)


def flag(example: bool, *, also: Sequence[Any] = ()) -> Rule:
    """true or false (``also``: other allowed values, such as auto or null)."""
    words = ["true", "false", *(_shown(a) for a in also)]

    def allows(value: Any) -> bool:
        return isinstance(value, bool) or value in also and not _is_number(value)

    def closest(value: Any) -> Any:
        text = str(value).strip().lower()
        return {"yes": True, "on": True, "1": True, "no": False, "off": False, "0": False}.get(text)

    return Rule(", ".join(words[:-1]) + " or " + words[-1], allows, example, closest)


def choice(options: Sequence[str], example: str | None = None) -> Rule:
    def closest(value: Any) -> str | None:
        import difflib

        near = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.5)
        lowered = {o.lower(): o for o in options}
        return lowered.get(str(value).lower()) or (near[0] if near else None)

    return Rule(
        "one of " + ", ".join(options),
        lambda v: isinstance(v, str) and v in options,
        example or options[0],
        closest,
    )


def text(example: str, *, nullable: bool = True, pattern: str | None = None, what: str = "text") -> Rule:
    """A non-empty string (``pattern``: matching it); ``nullable``: or null."""

    def allows(value: Any) -> bool:
        if value is None:
            return nullable
        return (
            isinstance(value, str) and bool(value.strip()) and (not pattern or re.fullmatch(pattern, value))
        )

    return Rule(what + (", or null" if nullable else ""), allows, example)


def pair(
    low: float, high: float, example: list[float], *, nullable: bool = False, low_open: bool = False
) -> Rule:
    """[a, b], two finite numbers with low <= a <= b <= high (``low_open``: low < a)."""
    inner = number(low, high, low_open=low_open)

    def allows(value: Any) -> bool:
        if value is None:
            return nullable
        return (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(inner.allows(v) for v in value)
            and value[0] <= value[1]
        )

    def closest(value: Any) -> list[float] | None:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return None
        near = [inner.closest(v) for v in value] if inner.closest else []
        return sorted(near) if None not in near else None

    left = "(" if low_open else "["
    bound = f"{left}{low:g}, {'inf' if high == math.inf else f'{high:g}'}]"
    return Rule(
        f"[min, max], two finite numbers in {bound} with min <= max" + (", or null" if nullable else ""),
        allows,
        example,
        closest,
    )


def _milestones() -> Rule:
    def allows(value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and all(_is_whole(v) and 1 <= v <= MAX_ITERS for v in value)
            and all(a < b for a, b in zip(value, value[1:], strict=False))
        )

    def closest(value: Any) -> list[int] | None:
        items = value if isinstance(value, (list, tuple)) else [value]
        numbers = [parse_number(v) for v in items]
        if any(n is None or not math.isfinite(n) or n < 1 for n in numbers):
            return None
        return sorted({int(round(n)) for n in numbers})

    return Rule(
        "a list of whole iterations >= 1 in increasing order, e.g. [32000,48000] (32k and 48k), "
        "or [] for none",
        allows,
        [32000, 48000],
        closest,
    )


def _device() -> Rule:
    def allows(value: Any) -> bool:
        return isinstance(value, str) and bool(DEVICE_PATTERN.fullmatch(value))

    def closest(value: Any) -> str | None:
        lowered = str(value).strip().lower().replace(" ", "")
        return (
            lowered
            if DEVICE_PATTERN.fullmatch(lowered)
            else ("cuda:" + lowered if lowered.isdigit() else None)
        )

    return Rule("auto, cpu, cuda, cuda:N (N = the GPU's index) or mps", allows, "auto", closest)


def _rules() -> dict[str, Rule]:
    from cnnbench.core.device import PRECISIONS
    from cnnbench.core.schedule import SCHEDULES, WARMUPS
    from cnnbench.data import DATASETS
    from cnnbench.data.augment import NORMALIZATIONS
    from cnnbench.data.policies import POLICIES, RA_BINS
    from cnnbench.runs.continuation import RESUME_MODES

    compile_modes = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    strength = number(0.0, example=0.4)
    return {
        "depth": whole(1, MAX_DEPTH, 20, what=" of layers"),
        "seed": whole(0, MAX_SEED, 0),
        "model.name": text("resnet", nullable=False, what="a model name (`cnnbench models` lists them)"),
        "model.default_depth": whole(1, MAX_DEPTH, 20),
        # --- data
        "data.name": choice(sorted(DATASETS), "cifar10"),
        "data.root": text("~/data", what="a folder"),
        "data.download": flag(True),
        "data.url": text(
            "file:///path/to/cifar-10-python.tar.gz", what="an http(s):// or file:// URL or a path"
        ),
        "data.md5": text(
            "c58f30108f718f92721af3b95e74349a", pattern=r"[0-9a-fA-F]{32}", what="32 hex digits"
        ),
        "data.val_size": whole(0, MAX_IMAGES, 5000, what=" of images"),
        "data.normalize": choice(NORMALIZATIONS),
        "data.extra": flag(False),
        "data.train_size": whole(1, MAX_IMAGES, 50000, what=" of images"),
        "data.test_size": whole(1, MAX_IMAGES, 10000, what=" of images"),
        "data.num_classes": whole(2, 100_000, 10, what=" of classes"),
        # --- augmentation
        "augment.name": text("standard", nullable=False, what="a label"),
        "augment.padding": whole(0, 1024, 4, what=" of pixels"),
        "augment.flip": flag(True),
        "augment.scale": pair(0.0, 1.0, [0.25, 1.0], nullable=True, low_open=True),
        "augment.ratio": pair(0.0, math.inf, [0.75, 1.3333333333333333], low_open=True),
        **{f"augment.{k}": strength for k in ("jitter", "brightness", "contrast", "saturation", "lighting")},
        "augment.policy": choice(POLICIES, "none"),
        "augment.policy_n": whole(1, 100, 2, what=" of ops"),
        "augment.policy_m": whole(0, RA_BINS - 1, 9),
        "augment.cutout": whole(0, 1024, 16, what=" of pixels"),
        "augment.mixup": number(0.0, example=0.2),
        "augment.cutmix": number(0.0, example=1.0),
        "augment.mix_prob": number(0.0, 1.0, 1.0),
        "augment.mix_switch_prob": number(0.0, 1.0, 0.5),
        # --- optimizer (the class checks the rest of its arguments itself)
        "optimizer._target_": text("torch.optim.SGD", nullable=False, what="an optimizer class"),
        "optimizer.name": text("sgd", nullable=False, what="a label"),
        "optimizer.lr": number(0.0, example=0.1, low_open=True),
        "optimizer.momentum": number(0.0, example=0.9),
        "optimizer.weight_decay": number(0.0, example=1e-4),
        "optimizer.dampening": number(0.0, 1.0, 0.0),
        "optimizer.nesterov": flag(False),
        "optimizer.betas": pair(0.0, 1.0, [0.9, 0.999]),
        "optimizer.eps": number(0.0, example=1e-8),
        "optimizer.no_decay_bn_bias": flag(False),
        # --- schedule
        "schedule.name": choice(SCHEDULES, "paper"),
        "schedule.milestones": _milestones(),
        "schedule.gamma": number(0.0, example=0.1, low_open=True),
        "schedule.min_lr": number(0.0, example=0.0),
        "schedule.warmup_iters": whole(0, MAX_ITERS, 400, what=" of iterations"),
        "schedule.warmup_lr": number(0.0, example=0.01),
        "schedule.warmup": choice(WARMUPS),
        "schedule.warmup_until_error": number(
            0.0, 1.0, 0.8, low_open=True, nullable=True, what="a training error (0.8 = 80%)"
        ),
        "schedule.pct_start": number(0.0, 1.0, 0.3, low_open=True, high_open=True),
        "schedule.div_factor": number(0.0, example=25.0, low_open=True),
        "schedule.final_div_factor": number(0.0, example=1e4, low_open=True),
        # --- trainer
        "trainer.max_iters": whole(1, MAX_ITERS, 64000, what=" of iterations"),
        "trainer.batch_size": whole(1, MAX_IMAGES, 128, what=" of images"),
        "trainer.eval_every": whole(1, MAX_ITERS, 400, what=" of iterations"),
        "trainer.eval_batch_size": whole(1, MAX_IMAGES, 1000, what=" of images"),
        "trainer.log_every": whole(1, MAX_ITERS, 100, what=" of iterations"),
        "trainer.ckpt_every": whole(1, MAX_ITERS, 2000, what=" of iterations"),
        "trainer.device": _device(),
        "trainer.precision": choice(PRECISIONS, "auto"),
        "trainer.allow_slow_precision": flag(False),
        "trainer.compile": flag(False, also=["auto"]),
        "trainer.compile_mode": choice(compile_modes, "auto"),
        "trainer.channels_last": flag(False, also=["auto"]),
        "trainer.cuda_graphs": flag(False, also=["auto"]),
        "trainer.fused_optimizer": flag(False, also=["auto"]),
        "trainer.sync_bn": flag(False),
        "trainer.bn_group": whole(1, MAX_IMAGES, 64, nullable=True, what=" of images"),
        "trainer.tf32": flag(False, also=[None]),
        "trainer.log_grad_every": whole(0, MAX_ITERS, 100, what=" of iterations (0 = off)"),
        "trainer.resume": choice(RESUME_MODES, "auto"),
        "trainer.label_smoothing": number(0.0, 1.0, 0.1, high_open=True),
        "trainer.ema_decay": number(0.0, 1.0, 0.999, high_open=True),
    }


_RULES: dict[str, Rule] = {}


def rules() -> dict[str, Rule]:
    """``RULES``: every fixed key of the composed config and what it may hold (built once, lazily: the
    choices come from the modules that own them)."""
    if not _RULES:
        _RULES.update(_rules())
    return _RULES


# Sections whose keys a class checks itself (model options, optimizer arguments): not in the table.
CHECKED_BY_CONSTRUCTION = ("model.", "optimizer.")


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
    usual = f" (a usual value: {_shown(rule.example)})" if _shown(rule.example) != _shown(near) else ""
    return CnnbenchError(
        f"{key}={_shown(value)} {problem}: {key} must be {rule.allowed}. The closest valid value is "
        f"{key}={_shown(near)}{usual}. Nothing was written."
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
        shown = " ".join(f"model.{k}={_shown(v)}" for k, v in options.items())
        raise CnnbenchError(
            f"model={model['name']} depth={config['depth']} {shown} cannot be built: {exc}. Check these "
            f"options (`cnnbench config model={model['name']}` shows the defaults)."
        ) from None
    kwargs = optimizer_kwargs(config["optimizer"])
    cls = optimizer_class(config["optimizer"])
    try:
        cls([torch.zeros(1, requires_grad=True)], **kwargs)
    except Exception as exc:  # torch's own refusal (e.g. nesterov without momentum)
        shown = " ".join(f"optimizer.{k}={_shown(v)}" for k, v in kwargs.items())
        target = config["optimizer"].get("_target_") or cls.__name__
        raise CnnbenchError(
            f"{target} refuses {shown}: {exc}. Change the value it names "
            f"(`cnnbench config optimizer={config['optimizer'].get('name')}` shows the defaults)."
        ) from None
