"""Timing on a device: synchronized windows of back-to-back calls, interleaved rounds, their medians.

One hand-written, synchronized window rather than ``torch.utils.benchmark.Timer``: its ``timeit`` runs
untimed warm-up calls inside every window, which would add steps to the interleaved protocols (and triple
a one-pass evaluation window); every caller warms up once, up front. Used by the fast-path probe, its
CUDA stage, ``cnnbench bench`` and ``benchmarks/``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

MAX_ROUNDS = 5  # rounds of ``timed_rounds`` at most, whatever the budget


def sync(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU or without a device."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed_s(fn: Callable[[], object], calls: int, device: torch.device | None = None) -> float:
    """Seconds for exactly ``calls`` back-to-back calls of ``fn``, synchronizing only before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return time.perf_counter() - start


def ms_per_call(fn: Callable[[], object], calls: int, device: torch.device | None = None) -> float:
    """Milliseconds per call over one window of ``calls`` back-to-back calls (``elapsed_s``)."""
    return 1e3 * elapsed_s(fn, calls, device) / calls


def timed_rounds(
    workloads: Mapping[str, Callable[[], object]], device: torch.device, steps: int, budget_s: float
) -> dict[str, list[float]]:
    """Every round's ms per step of each (warmed-up) workload: interleaved rounds of ``steps`` steps, the
    order rotating each round, as many rounds (1 to ``MAX_ROUNDS``) as fit in ``budget_s`` seconds."""
    order = list(workloads)
    started = time.perf_counter()
    estimate = {name: ms_per_call(workloads[name], 1, device) for name in order}
    per_round = steps * sum(estimate.values()) / 1e3
    left = budget_s - (time.perf_counter() - started)
    rounds = int(min(max(left / max(per_round, 1e-9), 1), MAX_ROUNDS))
    samples: dict[str, list[float]] = {name: [] for name in order}
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            samples[name].append(ms_per_call(workloads[name], steps, device))
    return samples


def fastest_in_rounds(
    workloads: Mapping[str, Callable[[], object]],
    device: torch.device,
    steps: int,
    budget_s: float,
    rounds: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """The fastest ms per step of each workload over ``timed_rounds``: other processes only ever make a
    round slower, so the fastest is the best estimate. ``rounds``, when given, receives every round."""
    samples = timed_rounds(workloads, device, steps, budget_s)
    if rounds is not None:
        rounds.update(samples)
    return {name: min(values) for name, values in samples.items()}


def median(values: Sequence[float]) -> float:
    """The median of repeated measurements (what bench and the A/B comparison report)."""
    return float(statistics.median(values))
