"""What a rule for one config key is: ``Rule`` (what it allows, in words, and the closest valid value
for a bad one) and its kinds (whole numbers, numbers, flags, choices, text, pairs, milestones, devices).
The table of ``cnnbench.rundir.values`` is built from them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


def shown(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
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
    words = ["true", "false", *(shown(a) for a in also)]

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


def milestones() -> Rule:
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


def device() -> Rule:
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
