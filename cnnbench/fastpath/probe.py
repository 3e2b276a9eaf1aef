"""The precision/layout probe and its per-machine cache: measured until clean (or provisional), read back
at later starts, measured again when provisional on an idle machine or found stale by a run, and the
compile probe beside it. The machine's key is ``fastpath.machine``, the timed workload
``fastpath.workload``, a run's check against the answer ``fastpath.steady``; the CUDA-only second stage
is ``fastpath.cuda``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import torch

from cnnbench.core.cache import cache_dir, cached_measurement, entry_name, locked, read_json, write_json
from cnnbench.core.cpuload import BUSY_PCT, OtherLoad
from cnnbench.fastpath.choice import (
    CACHE_FILE,
    PROBE_BUDGET_S,
    PROBE_RETRY_BUDGET_S,
    PROBE_STEPS,
    PROBE_TOTAL_S,
    PROBE_TRIES,
    SPREAD_MAX_PCT,
    candidate_name,
    choose,
    choose_compile,
    largest_spread,
    noise_reasons,
    round_stats,
)
from cnnbench.fastpath.machine import candidates as candidates  # read here by benchmarks/gpu_check
from cnnbench.fastpath.machine import machine_key
from cnnbench.fastpath.workload import measure, measure_compile

log = logging.getLogger("cnnbench")


def probe(device: torch.device, reprobe: bool = False, announce: bool = True) -> dict[str, Any]:
    """This machine's measured timings and choice (cached; ``reprobe``: measure again).

    A cached answer is measured again when it is provisional (its probe was noisy) and the machine is idle
    now, or when a run found it stale (``SteadyState``). Otherwise it is final and every later run uses it.
    """
    key = machine_key(device)
    path = cache_dir() / CACHE_FILE

    def measure_now() -> dict[str, Any]:
        if announce:
            log.info("Measuring the fastest settings for this machine (once; cached in %s)...", path)
        entry = {"machine": key, **measure_until_clean(device)}
        if entry["provisional"]:
            log.warning(provisional_message(entry))
        return entry

    def reuse(entry: Mapping[str, Any]) -> bool:
        return not reprobe and not _measure_again(entry)

    entry, cached = cached_measurement(path, "entries", key, measure_now, reuse)
    if cached and entry.get("provisional"):
        log.warning(provisional_message(entry))
    return {**entry, "cached": cached}


def measure_until_clean(device: torch.device) -> dict[str, Any]:
    """``measure`` until a try is clean (``choice.noise_reasons``), at most ``PROBE_TRIES`` tries started
    within ``PROBE_TOTAL_S``: the answer, each try's load and spread, and whether it is provisional.

    A clean try answers alone (final). When every try is noisy the answer is each candidate's fastest over
    all of them (other processes only slow a round), marked provisional.
    """
    started = time.perf_counter()
    tries: list[dict[str, Any]] = []
    pooled: dict[str, list[float]] = {}
    rounds: dict[str, list[float]] = {}
    reasons: list[str] = []
    for attempt in range(PROBE_TRIES):
        budget = PROBE_BUDGET_S if attempt == 0 else PROBE_RETRY_BUDGET_S
        if attempt and time.perf_counter() - started + budget > PROBE_TOTAL_S:
            break
        if attempt:
            log.info("The fast-path measurement was disturbed (%s); measuring again.", "; ".join(reasons))
        began = time.perf_counter()
        load = OtherLoad()
        load.start()
        rounds = {}
        timings = measure(device, budget_s=budget, steps=PROBE_STEPS.get(device.type, 2), rounds=rounds)
        load.stop()
        rounds = rounds or {name: [ms] for name, ms in timings.items()}  # a measurement that kept none
        stats = {name: round_stats(values) for name, values in rounds.items()}
        reasons = noise_reasons(stats, load.percent(), load.busy())
        widest = largest_spread(stats)
        tries.append(
            {
                "other_cpu_pct": _rounded(load.percent()),
                "spread_pct": _rounded(widest[1] if widest else None),
                "seconds": round(time.perf_counter() - began, 2),
                "noisy": reasons,
            }
        )
        for name, values in rounds.items():
            pooled.setdefault(name, []).extend(values)
        if not reasons:
            break
    answer = pooled if reasons else rounds
    stats = {name: _rounded_stats(round_stats(values)) for name, values in answer.items()}
    timings = {name: s["fastest_ms"] for name, s in stats.items()}
    return {
        "timings_ms": timings,
        "choice": choose(timings),
        "provisional": bool(reasons),
        "stats": stats,
        "rounds_ms": {name: [round(ms, 3) for ms in values] for name, values in answer.items()},
        # the last try's: what the machine looked like when the answer was settled (or given up on)
        "other_cpu_pct": tries[-1]["other_cpu_pct"],
        "spread_pct": tries[-1]["spread_pct"],
        "tries": tries,
        "thresholds": {"busy_pct": BUSY_PCT, "spread_pct": SPREAD_MAX_PCT},
        "probe_seconds": round(time.perf_counter() - started, 2),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _rounded_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        **stats,
        "fastest_ms": round(stats["fastest_ms"], 3),
        "median_ms": round(stats["median_ms"], 3),
        "spread_pct": _rounded(stats["spread_pct"]),
    }


def provisional_message(entry: Mapping[str, Any]) -> str:
    """What a run using a provisional answer says at its start (train.log and the console)."""

    def pct(value: float | None) -> str:
        return "unknown" if value is None else f"{value:.0f}%"

    tries = len(entry.get("tries") or []) or 1
    load, spread = pct(entry.get("other_cpu_pct")), pct(entry.get("spread_pct"))
    return (
        f"Provisional fast-path choice {entry['choice']}: measured under load {load} of a core / spread "
        f"{spread} between a candidate's two fastest rounds (trusted up to {BUSY_PCT:.0f}% / "
        f"{SPREAD_MAX_PCT:.0f}%; {tries} {'try' if tries == 1 else 'tries'}); measuring again at the next "
        "start that finds the machine idle (or run `cnnbench bench --probe`)."
    )


def _measure_again(entry: Mapping[str, Any]) -> bool:
    """Whether a cached answer is measured again at this start: a stale one always, a provisional one (or
    one of the earlier busy mark) when the machine is idle now; a final one never."""
    if entry.get("stale"):
        return True
    if entry.get("provisional") or entry.get("busy"):
        return _machine_idle()
    return False


def _machine_idle(seconds: float = 0.5) -> bool:
    """Whether other processes use at most ``BUSY_PCT`` now. Half a second (50 clock ticks of /proc/stat:
    BUSY_PCT is 10 of them) is what every start with a provisional answer waits for it."""
    load = OtherLoad()
    load.start()
    time.sleep(seconds)
    other = load.stop()
    return other is None or other <= BUSY_PCT


def mark_stale(device: torch.device, measured_at: str, reason: str) -> bool:
    """Mark this machine's cached answer measured at ``measured_at`` stale (the next start measures again);
    False when the cache holds another answer by now (measured again meanwhile) or none."""
    name = entry_name(machine_key(device))
    path = cache_dir() / CACHE_FILE
    with locked(path):
        cache = read_json(path)
        entry = (cache.get("entries") or {}).get(name)
        if not entry or entry.get("measured_at") != measured_at:
            return False
        entry["stale"] = {"reason": reason, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(path, cache)
        return True


def probe_compile(device: torch.device, precision: str, channels_last: bool) -> dict[str, Any]:
    """Whether compiling pays on this machine (cached beside the probe)."""
    key = {**machine_key(device), "compile_for": candidate_name(precision, channels_last)}

    def measure_now() -> dict[str, Any]:
        log.info("Measuring whether torch.compile pays off on this machine (once; about a minute)...")
        result = measure_compile(device, precision, channels_last)
        return {**result, "compile": choose_compile(result["eager_ms"], result["compiled_ms"])}

    return cached_measurement(cache_dir() / CACHE_FILE, "compile", key, measure_now)[0]
