"""The CUDA stage of the probe: eager or compiled, foreach or fused optimizer, with or without the update
captured as a CUDA graph, timed for the chosen precision and layout, cached beside the first stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from cnnbench.core.cache import cache_dir, cached_measurement
from cnnbench.core.timing import fastest_in_rounds, sync
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.choice import BY_NAME, CACHE_FILE, CUDA_COMPILE_MODE, PROBE_BUDGET_S, candidate_name
from cnnbench.fastpath.machine import machine_key
from cnnbench.fastpath.workload import workload

log = logging.getLogger("cnnbench")


def measure_variants(
    device: torch.device,
    precision: str,
    channels_last: bool,
    names: list[str],
    compile_mode: str = CUDA_COMPILE_MODE,
    budget_s: float = PROBE_BUDGET_S,
    steps: int = 5,
) -> dict[str, Any]:
    """The fastest ms per update of each variant in ``names`` (interleaved rounds, as ``measure``), and
    the compilation time of the compiled ones (the longest warm-up: the first compile of the graph).

    Warm-up: enough calls to get past a graph's eager steps and its capture. A variant that fails to
    build, compile or capture here is left out (and logged), so ``auto`` never picks it.
    """
    from cnnbench.update.graphs import WARMUP_STEPS

    start = time.perf_counter()
    workloads: dict[str, Callable[[], object]] = {}
    compile_s = 0.0
    for name in names:
        v = BY_NAME[name]
        try:
            step = workload(
                device,
                precision,
                channels_last,
                v.compile,
                fused=v.fused,
                graphs=v.graphs,
                compile_mode=compile_mode,
            )
            began = time.perf_counter()
            for _ in range(WARMUP_STEPS + 2):
                step()
            sync(device)
        except Exception as exc:  # a variant this torch/GPU cannot run: not a candidate
            log.warning("Fast-path variant %s failed here and is left out: %s", name, exc)
            continue
        if v.compile:
            compile_s = max(compile_s, time.perf_counter() - began)
        workloads[name] = step
    if not workloads:
        raise CnnbenchError(f"none of the update variants {names} ran on {device}.")
    left = budget_s - (time.perf_counter() - start)
    return {"timings_ms": fastest_in_rounds(workloads, device, steps, left), "compile_s": compile_s}


def probe_variants(
    device: torch.device, precision: str, channels_last: bool, names: list[str], compile_mode: str
) -> dict[str, Any]:
    """The update variants' timings on this machine (cached beside the probe, per set of variants)."""
    key = {
        **machine_key(device),
        "variants_for": candidate_name(precision, channels_last),
        "variants": sorted(names),
        "compile_mode": compile_mode,
    }
    path = cache_dir() / CACHE_FILE

    def measure_now() -> dict[str, Any]:
        log.info("Measuring the fastest way to run the update on this GPU (once; cached in %s)...", path)
        return {
            **measure_variants(device, precision, channels_last, names, compile_mode),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    entry, cached = cached_measurement(path, "variants", key, measure_now)
    return {**entry, "cached": cached}
