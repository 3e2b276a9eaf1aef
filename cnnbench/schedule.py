"""Iteration-based learning-rate schedules, as a pure function of the iteration (nothing to resume)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from cnnbench.errors import CnnbenchError

SCHEDULES = ("paper", "cosine", "onecycle")
WARMUPS = ("constant", "linear")


def make_lr_schedule(schedule: Mapping, base_lr: float, max_iters: int) -> Callable[[int], float]:
    """Return ``lr(iteration)`` for iterations 0..max_iters-1.

    ``paper``: ``base_lr`` divided by 1/gamma at each milestone (He et al.: 0.1, /10 at 32k and 48k).
    ``cosine``: cosine decay to ``min_lr`` over the iterations after the warm-up.
    ``onecycle``: Smith's one-cycle policy as torch's ``OneCycleLR`` draws it (cosine annealing):
    from ``base_lr / div_factor`` up to ``base_lr`` over ``pct_start`` of the run, then down to
    ``base_lr / div_factor / final_div_factor`` (the learning rate only; momentum is not cycled).
    Every schedule: a warm-up over the first ``warmup_iters`` iterations, either ``constant`` at
    ``warmup_lr`` (the paper's ResNet-110 warm-up) or ``linear`` from ``warmup_lr`` to the schedule's
    own value at the end of the warm-up.
    """
    name = schedule.get("name")
    warmup_iters = int(schedule.get("warmup_iters", 0) or 0)
    warmup_lr = float(schedule.get("warmup_lr", base_lr))
    warmup = str(schedule.get("warmup", "constant"))
    if warmup_iters < 0:
        raise CnnbenchError(f"schedule.warmup_iters={warmup_iters} must be >= 0.")
    if warmup not in WARMUPS:
        raise CnnbenchError(f"schedule.warmup={warmup!r} is not a warm-up; use {' or '.join(WARMUPS)}.")

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

    elif name == "onecycle":
        pct = float(schedule.get("pct_start", 0.3))
        if not 0.0 < pct < 1.0:
            raise CnnbenchError(f"schedule.pct_start={pct} must be between 0 and 1 (exclusive); e.g. 0.3.")
        start_lr = base_lr / float(schedule.get("div_factor", 25.0))
        end_lr = start_lr / float(schedule.get("final_div_factor", 1e4))
        up = max(pct * max_iters - 1, 1.0)  # torch's OneCycleLR phase ends (in steps)
        down = max(max_iters - 1 - up, 1.0)

        def anneal(start: float, end: float, progress: float) -> float:
            return end + (start - end) / 2.0 * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1)

        def main_lr(it: int) -> float:
            if it <= up:
                return anneal(start_lr, base_lr, it / up)
            return anneal(base_lr, end_lr, (it - up) / down)

    else:
        raise CnnbenchError(
            f"Unknown schedule {name!r}. Available schedules: {', '.join(SCHEDULES)}. "
            f"Pick one with schedule=<name>."
        )

    def lr(it: int) -> float:
        if it >= warmup_iters:
            return main_lr(it)
        if warmup == "constant":
            return warmup_lr
        return warmup_lr + (main_lr(warmup_iters) - warmup_lr) * it / warmup_iters

    return lr
