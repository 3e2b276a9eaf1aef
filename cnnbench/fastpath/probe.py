"""The precision/layout/compile probe: the machine's key, the timed reference workload (ResNet-20 at
batch 128, the real model update), and the per-machine cache of its answers. The same probe times the
GPU's precisions and layouts; the CUDA-only second stage is ``fastpath.cuda``."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.cache import cache_dir, locked
from cnnbench.core.cache import read_json as _read
from cnnbench.core.cache import write_json as _write
from cnnbench.core.cpuload import OtherLoad
from cnnbench.core.device import autocast
from cnnbench.fastpath.choice import (
    BUSY_PCT,
    CACHE_FILE,
    CPU_COMPILE_MODE,
    PROBE_BATCH,
    PROBE_BUDGET_S,
    PROBE_DEPTH,
    PROBE_VERSION,
    candidate_name,
    choose,
    choose_compile,
    parse_candidate,
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


def _key_string(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


# ----- measurement ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    from cnnbench.engine.graphs import GraphedUpdate
    from cnnbench.engine.update import model_step
    from cnnbench.models import build_model

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


def _time(step: Callable[[], object], device: torch.device, steps: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 1e3 * (time.perf_counter() - start) / steps


def candidates(device: torch.device) -> list[str]:
    if device.type == "cuda":
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    else:
        # bf16 where oneDNN runs it at all (natively or emulated): only the timing says if it is faster.
        bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        precisions = ["fp32"] + (["bf16"] if bf16 else [])
    return [candidate_name(p, cl) for p in precisions for cl in (True, False)]


def measure(device: torch.device, budget_s: float = PROBE_BUDGET_S, steps: int = 2) -> dict[str, float]:
    """The fastest ms per model update of each candidate over interleaved rounds (the order rotates).

    Two warm-up steps each (oneDNN/cuDNN pick their kernels there), then as many rounds (1 to 5) as fit
    in ``budget_s`` seconds: a slow machine gets fewer rounds, never a longer probe. The minimum, not
    the median: other processes only ever make a window slower, so the fastest is the best estimate.
    """
    start = time.perf_counter()
    names = candidates(device)
    workloads = {name: _workload(device, *parse_candidate(name)) for name in names}
    for step in workloads.values():
        step()
    return fastest_in_rounds(workloads, device, steps, budget_s - (time.perf_counter() - start))


def fastest_in_rounds(
    workloads: dict[str, Callable[[], object]], device: torch.device, steps: int, budget_s: float
) -> dict[str, float]:
    """The fastest ms per step of each (warmed-up) workload over interleaved rounds of ``steps`` steps,
    the order rotating each round: as many rounds (1 to 5) as fit in ``budget_s`` seconds."""
    order = list(workloads)
    started = time.perf_counter()
    estimate = {name: _time(workloads[name], device, 1) for name in order}
    per_round = steps * sum(estimate.values()) / 1e3
    rounds = int(min(max((budget_s - (time.perf_counter() - started)) / max(per_round, 1e-9), 1), 5))
    samples: dict[str, list[float]] = {name: [] for name in order}
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            samples[name].append(_time(workloads[name], device, steps))
    return {name: min(values) for name, values in samples.items()}


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
        times["eager"].append(_time(eager, device, steps))
        times["compiled"].append(_time(compiled, device, steps))
    return {
        "eager_ms": statistics.median(times["eager"]),
        "compiled_ms": statistics.median(times["compiled"]),
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
    ms = min(_time(lambda: a @ b, device, 1) for _ in range(reps))
    return 2 * size**3 / (ms / 1e3) / 1e9


# ----- the probe and its cache ----------------------------------------------------------------------
def probe(device: torch.device, reprobe: bool = False, announce: bool = True) -> dict[str, Any]:
    """This machine's measured timings and choice (cached; ``reprobe``: measure again)."""
    key = machine_key(device)
    path = cache_dir() / CACHE_FILE
    with locked(path):
        cache = _read(path)
        entry = (cache.get("entries") or {}).get(_key_string(key))
        # A measurement taken on a busy machine is kept until the machine is found idle at a later start.
        if entry and not reprobe and not (entry.get("busy") and _machine_idle()):
            return {**entry, "cached": True}
        if announce:
            log.info("Measuring the fastest settings for this machine (once; cached in %s)...", path)
        start = time.perf_counter()
        load = OtherLoad()
        load.start()
        timings = measure(device)
        other = load.stop()
        choice = choose(timings)
        entry = {
            "machine": key,
            "timings_ms": timings,
            "choice": choice,
            "probe_seconds": round(time.perf_counter() - start, 2),
            "other_cpu_pct": other,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        # (Windows shorter than a second say nothing: a real probe takes seconds.)
        if other is not None and other > BUSY_PCT and entry["probe_seconds"] >= 1.0:
            # Timings taken beside other jobs can rank the candidates wrongly: keep the answer, marked,
            # and measure again at the first start that finds the machine idle.
            log.warning(
                "Other processes used %.0f%% of a core while the fast path was measured: using %s, and "
                "measuring again once the machine is idle (or run `cnnbench bench --probe` then).",
                other,
                choice,
            )
            entry["busy"] = True
        cache.setdefault("entries", {})[_key_string(key)] = entry
        _write(path, cache)
        return {**entry, "cached": False}


def _machine_idle(seconds: float = 0.5) -> bool:
    load = OtherLoad()
    load.start()
    time.sleep(seconds)
    other = load.stop()
    return other is None or other <= BUSY_PCT


def probe_compile(device: torch.device, precision: str, channels_last: bool) -> dict[str, Any]:
    """Whether compiling pays on this machine (cached beside the probe)."""
    key = {**machine_key(device), "compile_for": candidate_name(precision, channels_last)}
    path = cache_dir() / CACHE_FILE
    with locked(path):
        cache = _read(path)
        entry = (cache.get("compile") or {}).get(_key_string(key))
        if entry:
            return entry
        log.info("Measuring whether torch.compile pays off on this machine (once; about a minute)...")
        result = measure_compile(device, precision, channels_last)
        entry = {**result, "compile": choose_compile(result["eager_ms"], result["compiled_ms"])}
        cache.setdefault("compile", {})[_key_string(key)] = entry
        _write(path, cache)
        return entry
