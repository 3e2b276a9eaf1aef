"""Iteration-based learning-rate schedules, as a pure function of the iteration (nothing to resume)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from cnnbench.errors import CnnbenchError

SCHEDULES = ("paper", "cosine")


def make_lr_schedule(schedule: Mapping, base_lr: float, max_iters: int) -> Callable[[int], float]:
    """Return ``lr(iteration)`` for iterations 0..max_iters-1.

    ``paper``: ``base_lr`` divided by 1/gamma at each milestone (He et al.: 0.1, /10 at 32k and 48k).
    ``cosine``: cosine decay to ``min_lr`` over the iterations after the warm-up.
    Both: ``warmup_lr`` for the first ``warmup_iters`` iterations (the paper's ResNet-110 warm-up).
    """
    name = schedule.get("name")
    warmup_iters = int(schedule.get("warmup_iters", 0) or 0)
    warmup_lr = float(schedule.get("warmup_lr", base_lr))
    if warmup_iters < 0:
        raise CnnbenchError(f"schedule.warmup_iters={warmup_iters} must be >= 0.")

    if name == "paper":
        milestones = sorted(int(m) for m in schedule.get("milestones", []))
        gamma = float(schedule.get("gamma", 0.1))

        def main_lr(it: int) -> float:
            return base_lr * gamma ** sum(it >= m for m in milestones)

    elif name == "cosine":
        min_lr = float(schedule.get("min_lr", 0.0))
        span = max(max_iters - warmup_iters, 1)

        def main_lr(it: int) -> float:
            progress = min(max(it - warmup_iters, 0) / span, 1.0)
            return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))

    else:
        raise CnnbenchError(
            f"Unknown schedule {name!r}. Available schedules: {', '.join(SCHEDULES)}. "
            f"Pick one with schedule=<name>."
        )

    def lr(it: int) -> float:
        return warmup_lr if it < warmup_iters else main_lr(it)

    return lr
