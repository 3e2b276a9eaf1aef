"""The precision/layout/compile probe: the machine's key, the timed reference workload (ResNet-20 at
batch 128, the real model update), and the per-machine cache of its answers. The same probe times the
GPU's precisions and layouts; the CUDA-only second stage is ``fastpath.cuda``."""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.cache import cache_dir, cached_measurement, entry_name, locked, read_json, write_json
from cnnbench.core.cpuload import BUSY_PCT, OtherLoad
from cnnbench.core.device import autocast
from cnnbench.core.timing import fastest_in_rounds, median, ms_per_call
from cnnbench.fastpath.choice import (
    CACHE_FILE,
    CPU_COMPILE_MODE,
    PROBE_BATCH,
    PROBE_BUDGET_S,
    PROBE_DEPTH,
    PROBE_RETRY_BUDGET_S,
    PROBE_STEPS,
    PROBE_TOTAL_S,
    PROBE_TRIES,
    PROBE_VERSION,
    SPREAD_MAX_PCT,
    candidate_name,
    choose,
    choose_compile,
    largest_spread,
    noise_reasons,
    parse_candidate,
    round_stats,
    steady_state_off,
)

log = logging.getLogger("cnnbench")


# ----- the machine and its cache --------------------------------------------------------------------
def _cpu_info() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags":
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
                flags = sorted(f for f in value.split() if f in wanted)
                break
    return name, flags


def machine_key(device: torch.device) -> dict[str, Any]:
    """What changes the answer: the device, the CPU flags that matter, threads, torch."""
    key: dict[str, Any] = {"torch": torch.__version__, "device": device.type, "probe": PROBE_VERSION}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        key.update(
            gpu=torch.cuda.get_device_name(index), capability=list(torch.cuda.get_device_capability(index))
        )
    else:
        name, flags = _cpu_info()
        key.update(cpu=name, flags=flags, threads=torch.get_num_threads())
    return key


# ----- measurement ----------------------------------------------------------------------------------
def _workload(
    device: torch.device,
    precision: str,
    channels_last: bool,
    compiled: bool = False,
    *,
    fused: bool = False,
    graphs: bool = False,
    compile_mode: str = CPU_COMPILE_MODE,
):
    """A fresh ResNet-20 (same seed every time), its SGD, and one resident batch: a timed callable.

    ``fused``: SGD's fused implementation; ``graphs``: the update captured as a CUDA graph (after its
    eager warm-up calls), with the lr as a device tensor, as a run with ``trainer.cuda_graphs`` does.
    """
    from cnnbench.models import build_model
    from cnnbench.update.graphs import GraphedUpdate
    from cnnbench.update.step import model_step

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG
        torch.manual_seed(0)
        model = build_model("resnet", depth=PROBE_DEPTH, num_classes=10).to(device, memory_format=fmt)
    images = torch.randn(PROBE_BATCH, 3, 32, 32, generator=generator).to(device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (PROBE_BATCH,), generator=generator).to(device)
    lr: float | torch.Tensor = torch.tensor(0.01, device=device) if graphs else 0.01
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, fused=True if fused else None
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    forward = model
    if compiled:
        forward = (
            torch.compile(model) if compile_mode == "default" else torch.compile(model, mode=compile_mode)
        )
    context = autocast(device, precision, cache=not graphs)
    if not graphs:
        return lambda: model_step(forward, optimizer, scaler, context, images, labels)
    graphed = GraphedUpdate(lambda x, y: model_step(forward, optimizer, scaler, context, x, y))
    return lambda: graphed(images, labels)


def candidates(device: torch.device) -> list[str]:
    if device.type == "cuda":
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    else:
        # bf16 where oneDNN runs it at all (natively or emulated): only the timing says if it is faster.
        bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        precisions = ["fp32"] + (["bf16"] if bf16 else [])
    return [candidate_name(p, cl) for p in precisions for cl in (True, False)]


def measure(
    device: torch.device,
    budget_s: float = PROBE_BUDGET_S,
    steps: int = 2,
    rounds: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """The fastest ms per model update of each candidate over interleaved rounds (the order rotates);
    ``rounds``, when given, receives every round's ms per update of each candidate.

    Two warm-up steps each (oneDNN/cuDNN pick their kernels there), then as many rounds (1 to 5) as fit
    in ``budget_s`` seconds: a slow machine gets fewer rounds, never a longer probe. The minimum, not
    the median: other processes only ever make a window slower, so the fastest is the best estimate;
    whether the rounds agree enough to trust it is ``probe``'s question (``choice.noise_reasons``).
    """
    start = time.perf_counter()
    names = candidates(device)
    workloads = {name: _workload(device, *parse_candidate(name)) for name in names}
    for step in workloads.values():
        step()
    left = budget_s - (time.perf_counter() - start)
    return fastest_in_rounds(workloads, device, steps, left, rounds=rounds)


def measure_compile(device: torch.device, precision: str, channels_last: bool, steps: int = 5) -> dict:
    eager = _workload(device, precision, channels_last)
    compiled = _workload(device, precision, channels_last, compiled=True)
    start = time.perf_counter()
    for _ in range(2):
        compiled()  # compilation happens here
    compile_s = time.perf_counter() - start
    eager()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(3):
        times["eager"].append(ms_per_call(eager, steps, device))
        times["compiled"].append(ms_per_call(compiled, steps, device))
    return {
        "eager_ms": median(times["eager"]),
        "compiled_ms": median(times["compiled"]),
        "compile_s": compile_s,
    }


def matmul_peak_gflops(device: torch.device, precision: str, size: int = 2048, reps: int = 10) -> float:
    """The measured matmul throughput in ``precision`` (GFLOP/s): the ceiling bench compares with.

    The best of ``reps`` after three warm-up products: on a shared or virtual machine single products
    vary by 2x (measured), and the best is what the hardware can do.
    """
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    for _ in range(3):
        a @ b
    ms = min(ms_per_call(lambda: a @ b, 1, device) for _ in range(reps))
    return 2 * size**3 / (ms / 1e3) / 1e9


# ----- the probe and its cache ----------------------------------------------------------------------
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


# ----- the run's steady state against the probe's prediction ----------------------------------------
# The warm-up left out: the first logging window, and any ending this early (kernels, allocator, compile).
STEADY_SKIP_ITERS = 20
STEADY_WINDOWS, STEADY_STEPS = 3, 50  # at least this many logging windows and steps after the warm-up


class SteadyState:
    """Whether a run's steady-state step agrees with what the probe measured for its choice (once a run).

    Only for the probe's own workload, on a CPU, with the answer this run read from the probe or the cache:
    ResNet-20 (identity shortcuts, basic blocks, no stochastic depth), batch 128, 3x32x32 images, one
    process. There the prediction is the probed update itself and the loop adds up to ~9%; for another model
    or batch no scaling (by FLOPs or parameters) predicts a step within the tolerance. A step beyond
    ``STEADY_MAX_RATIO`` of the prediction either way is said once in train.log and the cached answer is
    marked stale, so the next start measures again; unless the run is slower while other processes use
    more than ``BUSY_PCT`` of a core: then the run is slowed, not the probe wrong.
    """

    def __init__(self, device: torch.device, candidate: str, predicted_ms: float, measured_at: str) -> None:
        self.device, self.candidate = device, candidate
        self.predicted_ms, self.measured_at = predicted_ms, measured_at
        self.windows: list[float] = []
        self.steps = 0
        self.last: int | None = None
        self.load = OtherLoad()
        self.done = False

    @classmethod
    def for_run(cls, parts: Any) -> SteadyState | None:
        """The check for a run (``parts``: its ``engine.parts.Parts``), or None where it does not apply."""
        fast_path, cfg = parts.fast_path, parts.cfg
        candidate = candidate_name(fast_path.precision, fast_path.channels_last)
        measured_at = fast_path.probe_record.get("measured_at")
        model = cfg.model
        reference = (
            parts.device.type == "cpu"
            and fast_path.chosen_by in ("probe", "cache")
            and measured_at
            and candidate in fast_path.timings_ms
            and model.name == "resnet"
            and int(cfg.depth) == PROBE_DEPTH
            and model.get("shortcut", "A") == "A"
            and model.get("block", "basic") == "basic"
            and float(model.get("stochastic_depth", 1.0) or 1.0) >= 1.0
            and int(parts.batch_size) == PROBE_BATCH
            and parts.dist.world_size == 1
            and tuple(parts.data.train_images.shape[1:]) == (3, 32, 32)
        )
        if not reference:
            return None
        return cls(parts.device, candidate, float(fast_path.timings_ms[candidate]), str(measured_at))

    def window(self, iteration: int, img_per_s: float) -> None:
        """A logging window of the run ended at ``iteration`` with ``img_per_s``; judges once enough
        windows after the warm-up are in."""
        if self.done or img_per_s <= 0:
            return
        if self.last is None or iteration <= STEADY_SKIP_ITERS:
            self.last = iteration
            self.load.start()  # other processes' load from the end of the warm-up on
            return
        self.windows.append(1e3 * PROBE_BATCH / img_per_s)
        self.steps += iteration - self.last
        self.last = iteration
        if len(self.windows) >= STEADY_WINDOWS and self.steps >= STEADY_STEPS:
            self.done = True
            self.load.stop()
            self._judge(median(self.windows))

    def _judge(self, measured_ms: float) -> None:
        if not steady_state_off(measured_ms, self.predicted_ms):
            return
        ratio = measured_ms / self.predicted_ms
        said = (
            f"The training step takes {measured_ms:.0f} ms in steady state (median of {len(self.windows)} "
            f"logging windows), {ratio:.2f}x the {self.predicted_ms:.0f} ms the fast-path probe measured for "
            f"{self.candidate} on this machine"
        )
        if ratio > 1 and self.load.busy():
            log.warning(
                "%s, but other processes used %.0f%% of a core meanwhile: this run is slowed by them; the "
                "probe's answer stands.",
                said,
                self.load.percent(),
            )
            return
        reason = f"a run's steady-state step was {ratio:.2f}x the {self.predicted_ms:.0f} ms measured"
        try:
            marked = mark_stale(self.device, self.measured_at, reason)
        except OSError as exc:  # the cache folder, not the run's: the run goes on
            log.warning(
                "%s: the probe's timings look wrong, but its cache could not be marked (%s).", said, exc
            )
            return
        then = "it measures again at the next start" if marked else "it has been measured again since"
        log.warning("%s: the probe's timings look wrong; %s.", said, then)
