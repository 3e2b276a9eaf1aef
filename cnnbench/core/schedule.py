"""Iteration-based learning-rate schedules, as a pure function of the iteration.

The one piece of state is the paper's ResNet-110 warm-up rule (``schedule.warmup_until_error``): the
warm-up lasts until the training error falls below a threshold, so where it ends is known only while
training. ``LrSchedule`` holds that one number (checkpointed); given it, the lr is again a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cnnbench.errors import CnnbenchError

SCHEDULES = ("paper", "cosine", "onecycle")
WARMUPS = ("constant", "linear")


def make_lr_schedule(
    schedule: Mapping, base_lr: float, max_iters: int, warmup_iters: int | None = None
) -> Callable[[int], float]:
    """Return ``lr(iteration)`` for iterations 0..max_iters-1.

    ``paper``: ``base_lr`` divided by 1/gamma at each milestone (He et al.: 0.1, /10 at 32k and 48k).
    ``cosine``: cosine decay to ``min_lr`` over the iterations after the warm-up.
    ``onecycle``: Smith's one-cycle policy as torch's ``OneCycleLR`` draws it (cosine annealing):
    from ``base_lr / div_factor`` up to ``base_lr`` over ``pct_start`` of the run, then down to
    ``base_lr / div_factor / final_div_factor`` (the learning rate only; momentum is not cycled).
    Every schedule: a warm-up over the first ``warmup_iters`` iterations, either ``constant`` at
    ``warmup_lr`` (the paper's ResNet-110 warm-up) or ``linear`` from ``warmup_lr`` to the schedule's
    own value at the end of the warm-up. ``warmup_iters``: where the warm-up ends, instead of
    ``schedule.warmup_iters`` (where the warm-up rule ended it, see ``LrSchedule``).
    """
    name = schedule.get("name")
    configured = int(schedule.get("warmup_iters", 0) or 0)
    warmup_lr = float(schedule.get("warmup_lr", base_lr))
    warmup = str(schedule.get("warmup", "constant"))
    if configured < 0:
        raise CnnbenchError(f"schedule.warmup_iters={configured} must be >= 0.")
    if warmup not in WARMUPS:
        raise CnnbenchError(f"schedule.warmup={warmup!r} is not a warm-up; use {' or '.join(WARMUPS)}.")
    warmup_until_error(schedule)  # checked with the rest
    warmup_iters = configured if warmup_iters is None else int(warmup_iters)

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


def warmup_until_error(schedule: Mapping) -> float | None:
    """``schedule.warmup_until_error`` checked: None (a fixed warm-up) or a training error in (0, 1]."""
    value = schedule.get("warmup_until_error")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise CnnbenchError(
            f"schedule.warmup_until_error={value!r} must be a training error in (0, 1] (a fraction, e.g. 0.8 "
            f"for the paper's 80%), or null for a warm-up of a fixed schedule.warmup_iters iterations."
        )
    if int(schedule.get("warmup_iters", 0) or 0) <= 0:
        raise CnnbenchError(
            f"schedule.warmup_until_error={value} needs a warm-up to end: set schedule.warmup_iters to the "
            f"most iterations it may last, e.g. schedule.warmup_iters=2000 (and the lr, schedule.warmup_lr)."
        )
    if str(schedule.get("warmup", "constant")) != "constant":
        raise CnnbenchError(
            f"schedule.warmup_until_error={value} ends the warm-up at a point known only while training, so "
            f"the warm-up must be constant (schedule.warmup=constant); a linear ramp needs a fixed end."
        )
    return float(value)


class LrSchedule:
    """``lr(iteration)`` of a run, with the paper's warm-up rule when ``schedule.warmup_until_error`` is set.

    He et al. 2016 warm up ResNet-110 at lr 0.01 "until the training error is below 80% (about 400
    iterations)". Here the training error is the mean over a logging window (``trainer.log_every``
    iterations, measured anyway: no extra device sync), checked at each window's end by ``observe``; the
    first window below the threshold ends the warm-up there, and the schedule proper starts at the next
    iteration. ``schedule.warmup_iters`` bounds the warm-up (a run that never gets below the threshold
    still reaches the schedule). Without the rule this is ``make_lr_schedule`` as it is.
    """

    def __init__(self, schedule: Mapping, base_lr: float, max_iters: int) -> None:
        self._schedule, self._base_lr, self._max_iters = schedule, base_lr, max_iters
        self.threshold = warmup_until_error(schedule)
        self.bound = int(schedule.get("warmup_iters", 0) or 0)
        self.warmup_lr = float(schedule.get("warmup_lr", base_lr))
        self.ended_at: int | None = None  # the first iteration of the schedule proper (rule only)
        self.end_error: float | None = None  # the window's training error when it ended
        self.ended_by: str | None = None  # error (below the threshold) or bound (warmup_iters reached)
        self._lr = make_lr_schedule(schedule, base_lr, max_iters)

    def __call__(self, iteration: int) -> float:
        return self._lr(iteration)

    @property
    def deciding(self) -> bool:
        """Whether the rule is on and has not ended the warm-up yet."""
        return self.threshold is not None and self.ended_at is None

    def observe(self, iteration: int, train_error: float) -> bool:
        """After ``iteration`` iterations, at a logging point: end the warm-up if ``train_error`` (the
        window's mean) is below the threshold, or the bound is reached. True when it ended here."""
        if not self.deciding:
            return False
        # Strictly below, as the paper says; 1.0 ends the warm-up at the first check whatever the error.
        below = train_error < self.threshold or self.threshold >= 1.0
        if below and iteration <= self.bound:
            self._end(iteration, float(train_error), "error")
        elif iteration >= self.bound:
            self._end(self.bound, float(train_error), "bound")  # the lr has followed the schedule since
        else:
            return False
        return True

    def _end(self, iteration: int, error: float | None, by: str) -> None:
        self.ended_at, self.end_error, self.ended_by = iteration, error, by
        self._lr = make_lr_schedule(self._schedule, self._base_lr, self._max_iters, warmup_iters=iteration)

    def record(self) -> dict[str, Any]:
        """metrics.json's keys for the rule (empty without it)."""
        if self.threshold is None:
            return {}
        return {
            "warmup_until_error": self.threshold,
            "warmup_ended_at": self.ended_at,
            "warmup_end_train_error": self.end_error,
            "warmup_ended_by": self.ended_by,
        }

    def describe(self) -> str:
        """The log line of the moment the warm-up ended."""
        error, limit = 100 * (self.end_error or 0.0), f"{100 * (self.threshold or 0):g}%"
        lr = f"lr {self.warmup_lr:g} -> {self(self.ended_at or 0):g}"
        if self.ended_by == "error":
            return f"warm-up ended at iteration {self.ended_at} (training error {error:.2f}% < {limit}); {lr}"
        return (
            f"warm-up ended at iteration {self.ended_at}, its bound schedule.warmup_iters (training error "
            f"{error:.2f}%, not below {limit}); {lr}"
        )

    # ----- state (checkpointed: where the warm-up ended is part of the run) ----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"ended_at": self.ended_at, "end_error": self.end_error, "ended_by": self.ended_by}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state and state.get("ended_at") is not None:
            self._end(int(state["ended_at"]), state.get("end_error"), str(state.get("ended_by") or "error"))
