"""The fast path chosen by measurement: precision, memory layout, compile, CUDA graphs and fused optimizer.

CPU flags do not say what is fast: a CPU that reports AVX512-BF16 can run bf16 convolutions at half the
fp32 speed, and another with AMX at seven times. So ``trainer.precision=auto`` and
``trainer.channels_last=auto`` are decided by timing the real model update (``engine.update.model_step``)
of the reference workload, ResNet-20 at batch 128 on 32x32 images, under each candidate (fp32 / bf16 x
channels-last / NCHW on a CPU; bf16 / fp16 / fp32 x layouts on a GPU). ``trainer.compile=auto`` on a
CPU is measured too (eager vs compiled, same workload), but only when a run of at least
``CPU_COMPILE_MIN_ITERS`` iterations asks: compiling costs tens of seconds, which only a long run
repays.

On CUDA a second stage times the ways of running the update for the chosen precision and layout
(``VARIANTS``): eager or compiled, foreach or fused optimizer, with or without the whole update captured
as a CUDA graph (``engine/graphs.py``); the compiled ones only for runs of at least
``CUDA_COMPILE_MIN_ITERS`` iterations, and a compiled variant wins only if its measured gain over the
run repays its measured compilation time. ``trainer.cuda_graphs`` and ``trainer.fused_optimizer``
follow it. On the CPU both stay off unless asked for: the CPU default stays what it was, bit for bit.

The result is cached per machine (device name, the CPU flags that matter, thread count, torch version)
in ``$CNNBENCH_CACHE`` (default ``~/.cache/cnnbench``), under a file lock so that parallel jobs probe
once. A run records what it used (env.json, checkpoint, TensorBoard hparams); a resume reuses that
record and never probes; the jobs of one sweep share the first job's choice (``fastpath.json`` in the
sweep folder); an explicit setting always wins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.cache import cache_dir, locked
from cnnbench.core.cache import read_json as _read
from cnnbench.core.cache import write_json as _write
from cnnbench.core.cpuload import OtherLoad
from cnnbench.core.device import CPU_COMPILE_MIN_ITERS, CUDA_COMPILE_MIN_ITERS, autocast, resolve_precision
from cnnbench.errors import CnnbenchError

log = logging.getLogger("cnnbench")

CACHE_FILE = "fastpath.json"  # in the cache folder (per machine) and in a sweep folder (per sweep)
PROBE_VERSION = 1
# Among candidates within this fraction of the fastest, prefer the more accurate / default one:
# fp32 over bf16 over fp16, channels-last over NCHW.
TIE_TOLERANCE = 0.03
# Compile only when it is this much faster (it also costs its compilation time at every start).
COMPILE_MIN_GAIN = 0.03
PRECISION_ORDER = ("fp32", "bf16", "fp16")
PROBE_BATCH, PROBE_DEPTH = 128, 20
# Other processes' CPU use (% of one core) above which a probe's answer is not cached.
BUSY_PCT = 50.0
PROBE_BUDGET_S = 12.0  # seconds the precision/layout probe may take, once per machine

# Compile modes. The CPU's was measured there (docs/performance.md). On CUDA, Inductor's default mode:
# max-autotune spends minutes autotuning every new graph, which a run of a small net on a fast GPU
# cannot repay (trainer.compile_mode=max-autotune-no-cudagraphs asks for it; a sweep's shared compile
# cache, cnnbench/fastpath/compilecache.py, then pays it once per graph).
CPU_COMPILE_MODE = "max-autotune-no-cudagraphs"
CUDA_COMPILE_MODE = "default"
RECORDED_COMPILE_MODE = "max-autotune-no-cudagraphs"  # what runs recorded before the mode was chosen used
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
INDUCTOR_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # Inductor's own CUDA graphs: not with ours


@dataclass(frozen=True)
class FastPath:
    """The settings a run trains with, and how they were chosen (for the records)."""

    precision: str
    channels_last: bool
    compile: bool
    chosen_by: str = "config"  # config | probe | cache | sweep | recorded | rule
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The update as one captured CUDA graph, and the optimizer's fused implementation (records written
    # before these existed read as False: what those runs did).
    cuda_graphs: bool = False
    fused_optimizer: bool = False
    compile_mode: str = RECORDED_COMPILE_MODE
    variant_timings_ms: dict[str, float] = field(default_factory=dict)  # CUDA: the update variants timed

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def candidate_name(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'channels_last' if channels_last else 'nchw'}"


def parse_candidate(name: str) -> tuple[str, bool]:
    precision, layout = name.split("/")
    return precision, layout == "channels_last"


# ----- the decision (pure: unit-tested with faked timings) ------------------------------------------
def choose(timings_ms: Mapping[str, float], tolerance: float = TIE_TOLERANCE) -> str:
    """The candidate to use: the fastest, or a more accurate/default one within ``tolerance`` of it."""
    if not timings_ms:
        raise ValueError("no timings to choose from")
    fastest = min(timings_ms.values())
    near = [name for name, ms in timings_ms.items() if ms <= fastest * (1 + tolerance)]

    def preference(name: str) -> tuple[int, int]:
        precision, channels_last = parse_candidate(name)
        return PRECISION_ORDER.index(precision), 0 if channels_last else 1

    return min(near, key=preference)


def choose_compile(eager_ms: float, compiled_ms: float, min_gain: float = COMPILE_MIN_GAIN) -> bool:
    return compiled_ms < eager_ms * (1 - min_gain)


# ----- the ways of running the update on CUDA (pure: unit-tested with faked timings) -----------------
@dataclass(frozen=True)
class Variant:
    compile: bool
    fused: bool
    graphs: bool

    @property
    def name(self) -> str:
        return f"{'compiled' if self.compile else 'eager'}/{'fused' if self.fused else 'foreach'}" + (
            "+graphs" if self.graphs else ""
        )

    @property
    def simplicity(self) -> tuple[bool, bool, bool]:
        """Near-ties go to the simplest: no compile (start-up cost), no graph, then the default optimizer."""
        return self.compile, self.graphs, self.fused


VARIANTS = tuple(
    Variant(c, f, g) for c in (False, True) for f in (False, True) for g in (False, True) if f or not g
)  # a captured update needs the fused optimizer: foreach reads a tensor lr back every step
BY_NAME = {v.name: v for v in VARIANTS}


def allowed_variants(
    compile_flag: bool | None,
    graphs_flag: bool | None,
    fused_flag: bool | None,
    *,
    consider_compile: bool,
    fused_ok: bool = True,
    graphs_ok: bool = True,
) -> list[Variant]:
    """The variants an ``auto`` setting may pick: explicit settings fix their flag; ``consider_compile``
    says whether a compiled variant is worth measuring (a long enough run, or compile asked for)."""
    return [
        v
        for v in VARIANTS
        if (v.compile == compile_flag if compile_flag is not None else (consider_compile or not v.compile))
        and (v.graphs == graphs_flag if graphs_flag is not None else (graphs_ok or not v.graphs))
        and (v.fused == fused_flag if fused_flag is not None else (fused_ok or not v.fused))
    ]


def choose_variant(
    timings_ms: Mapping[str, float],
    compile_s: float = 0.0,
    max_iters: int = 0,
    tolerance: float = TIE_TOLERANCE,
) -> str:
    """The variant to run: the fastest whose cost the run repays, or a simpler one within ``tolerance``.

    A compiled variant counts only when its gain over the fastest uncompiled one, over ``max_iters``
    steps, is at least its compilation time ``compile_s``.
    """
    if not timings_ms:
        raise ValueError("no timings to choose from")
    uncompiled = [ms for name, ms in timings_ms.items() if not BY_NAME[name].compile]
    base = min(uncompiled) if uncompiled else None

    def repaid(name: str, ms: float) -> bool:
        if not BY_NAME[name].compile or base is None:
            return True
        return (base - ms) * max_iters / 1e3 >= compile_s

    eligible = {name: ms for name, ms in timings_ms.items() if repaid(name, ms)}
    fastest = min(eligible.values())
    near = [name for name, ms in eligible.items() if ms <= fastest * (1 + tolerance)]
    return min(near, key=lambda name: BY_NAME[name].simplicity)


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
    estimate = {}
    for name, step in workloads.items():
        step()
        estimate[name] = _time(step, device, 1)
    per_round = steps * sum(estimate.values()) / 1e3
    rounds = int(min(max((budget_s - (time.perf_counter() - start)) / max(per_round, 1e-9), 1), 5))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
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
    from cnnbench.engine.graphs import WARMUP_STEPS

    start = time.perf_counter()
    workloads: dict[str, Callable[[], object]] = {}
    compile_s = 0.0
    for name in names:
        v = BY_NAME[name]
        try:
            step = _workload(
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
            _sync(device)
        except Exception as exc:  # a variant this torch/GPU cannot run: not a candidate
            log.warning("Fast-path variant %s failed here and is left out: %s", name, exc)
            continue
        if v.compile:
            compile_s = max(compile_s, time.perf_counter() - began)
        workloads[name] = step
    if not workloads:
        raise CnnbenchError(f"none of the update variants {names} ran on {device}.")
    order = list(workloads)
    estimate = {name: _time(workloads[name], device, 1) for name in order}
    per_round = steps * sum(estimate.values()) / 1e3
    rounds = int(min(max((budget_s - (time.perf_counter() - start)) / max(per_round, 1e-9), 1), 5))
    samples: dict[str, list[float]] = {name: [] for name in order}
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            samples[name].append(_time(workloads[name], device, steps))
    return {"timings_ms": {name: min(values) for name, values in samples.items()}, "compile_s": compile_s}


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
    with locked(path):
        cache = _read(path)
        entry = (cache.get("variants") or {}).get(_key_string(key))
        if entry:
            return {**entry, "cached": True}
        log.info("Measuring the fastest way to run the update on this GPU (once; cached in %s)...", path)
        entry = {
            **measure_variants(device, precision, channels_last, names, compile_mode),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        cache.setdefault("variants", {})[_key_string(key)] = entry
        _write(path, cache)
        return {**entry, "cached": False}


def _explicit(key: str, value: Any) -> bool | None:
    """``trainer.<key>``: None for ``auto`` (measure), else the boolean given."""
    if value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise CnnbenchError(f"trainer.{key}={value!r} must be auto, true or false.")


def _compile_mode(value: Any, device: torch.device) -> str:
    """``trainer.compile_mode``: auto -> the device's mode (see CPU_COMPILE_MODE), or a torch.compile mode."""
    value = str(value)
    if value == "auto":
        return CUDA_COMPILE_MODE if device.type == "cuda" else CPU_COMPILE_MODE
    if value not in COMPILE_MODES:
        raise CnnbenchError(
            f"trainer.compile_mode={value!r} is not a torch.compile mode; use auto or one of "
            f"{', '.join(COMPILE_MODES)}."
        )
    return value


def _check_graph_settings(
    device: torch.device,
    precision: str,
    graphs: bool | None,
    fused: bool | None,
    compile_flag: bool | None,
    compile_mode: str,
    *,
    fused_ok: bool,
    graphs_ok: bool,
) -> None:
    """Explicit settings that cannot run together: one clear error each, before anything is built."""
    if fused and not fused_ok:
        raise CnnbenchError(
            "trainer.fused_optimizer=true but the optimizer has no fused implementation; use "
            "optimizer=sgd, adam or adamw, or set trainer.fused_optimizer=auto."
        )
    if not graphs:
        return
    reason = None
    if device.type != "cuda":
        reason = "CUDA graphs need a CUDA GPU"
    elif fused is False:
        reason = "a captured update needs the fused optimizer (trainer.fused_optimizer=false)"
    elif precision == "fp16":
        reason = "fp16's GradScaler checks for infinities on the host"
    elif not graphs_ok:
        reason = (
            "they need one process (no torchrun), an optimizer with a fused implementation (sgd, adam, "
            "adamw) and a model without stochastic depth (a per-batch coin flip on the host)"
        )
    elif compile_flag and compile_mode in INDUCTOR_GRAPH_MODES:
        reason = f"trainer.compile_mode={compile_mode} already captures Inductor's own CUDA graphs"
    if reason:
        raise CnnbenchError(
            f"trainer.cuda_graphs=true cannot run here: {reason}. Set trainer.cuda_graphs=auto."
        )


def resolve(
    trainer: Mapping[str, Any],
    device: torch.device,
    recorded: Mapping[str, Any] | None = None,
    sweep_record: Path | None = None,
    *,
    fused_ok: bool = True,
    graphs_ok: bool = True,
) -> FastPath:
    """The settings for a run: explicit config > the run's record (resume) > the sweep's > the probe.

    ``trainer`` is the ``trainer`` config section; ``recorded`` the fast path a resumed run trained with;
    ``sweep_record`` the sweep's ``fastpath.json`` (written by its first job, read by the others).
    ``fused_ok``: the optimizer has a fused implementation; ``graphs_ok``: the run can be captured (one
    process, a fused optimizer, no host-side randomness in the model).
    """
    precision = str(trainer.get("precision", "auto"))
    resolve_precision(precision, device)  # names and device support, one clear error
    layout = _explicit("channels_last", trainer.get("channels_last", "auto"))
    compile_flag = _explicit("compile", trainer.get("compile", "auto"))
    graphs_flag = _explicit("cuda_graphs", trainer.get("cuda_graphs", "auto"))
    fused_flag = _explicit("fused_optimizer", trainer.get("fused_optimizer", "auto"))
    mode = _compile_mode(trainer.get("compile_mode", "auto"), device)
    max_iters = int(trainer.get("max_iters", 0))
    _check_graph_settings(
        device, precision, graphs_flag, fused_flag, compile_flag, mode, fused_ok=fused_ok, graphs_ok=graphs_ok
    )
    cuda = device.type == "cuda"
    graphs_ok = graphs_ok and cuda and (mode not in INDUCTOR_GRAPH_MODES or compile_flag is False)
    if not cuda:
        # The CPU default stays what it was: no graphs, the optimizer's own (foreach) implementation.
        graphs_flag = False
        fused_flag = False if fused_flag is None else fused_flag
    if recorded:
        return _from_record(
            recorded,
            precision,
            layout,
            compile_flag,
            graphs_flag,
            fused_flag,
            trainer,
            device,
            fused_ok=fused_ok,
            graphs_ok=graphs_ok,
        )
    fixed = None not in (layout, compile_flag, graphs_flag, fused_flag)
    if precision != "auto" and fixed:
        return FastPath(
            precision,
            layout,
            compile_flag,
            chosen_by="config",
            cuda_graphs=graphs_flag,
            fused_optimizer=fused_flag,
            compile_mode=mode,
        )
    if sweep_record is not None:
        with locked(sweep_record):
            shared = _read(sweep_record)
            if not shared:
                shared = resolve(trainer, device, fused_ok=fused_ok, graphs_ok=graphs_ok).record()
                _write(sweep_record, shared)
        chosen = resolve(trainer, device, recorded=shared, fused_ok=fused_ok, graphs_ok=graphs_ok)
        return replace(chosen, chosen_by="sweep")

    result = probe(device)
    best_precision, best_layout = parse_candidate(result["choice"])
    no_fp16 = graphs_flag is True  # a captured update cannot use fp16's GradScaler
    if precision == "auto" and layout is None and not (no_fp16 and best_precision == "fp16"):
        chosen_precision, chosen_layout = best_precision, best_layout
    else:  # one of them is fixed: the fastest measured candidate with it
        timings = {
            name: ms
            for name, ms in result["timings_ms"].items()
            if (precision == "auto" or parse_candidate(name)[0] == precision)
            and (layout is None or parse_candidate(name)[1] == layout)
            and not (no_fp16 and parse_candidate(name)[0] == "fp16")
        }
        fallback = (precision if precision != "auto" else "fp32", True if layout is None else layout)
        chosen_precision, chosen_layout = parse_candidate(choose(timings)) if timings else fallback
    variant_timings: dict[str, float] = {}
    if cuda:
        variant, variant_timings = _cuda_variant(
            device,
            chosen_precision,
            chosen_layout,
            compile_flag,
            graphs_flag,
            fused_flag,
            mode,
            max_iters,
            fused_ok=fused_ok,
            graphs_ok=graphs_ok and chosen_precision != "fp16",
        )
        compile_flag, graphs, fused = variant.compile, variant.graphs, variant.fused
    else:
        graphs, fused = False, bool(fused_flag)
        if compile_flag is None:
            if max_iters >= CPU_COMPILE_MIN_ITERS:
                compile_flag = bool(probe_compile(device, chosen_precision, chosen_layout)["compile"])
            else:
                compile_flag = False  # a short run never repays the compilation
    return FastPath(
        precision=chosen_precision,
        channels_last=chosen_layout,
        compile=compile_flag,
        chosen_by="cache" if result.get("cached") else "probe",
        timings_ms=dict(result["timings_ms"]),
        cuda_graphs=graphs,
        fused_optimizer=fused,
        compile_mode=mode,
        variant_timings_ms=variant_timings,
    )


def _cuda_variant(
    device: torch.device,
    precision: str,
    channels_last: bool,
    compile_flag: bool | None,
    graphs_flag: bool | None,
    fused_flag: bool | None,
    compile_mode: str,
    max_iters: int,
    *,
    fused_ok: bool,
    graphs_ok: bool,
) -> tuple[Variant, dict[str, float]]:
    """How to run the update on CUDA: measured among the variants the settings allow (one: no probe)."""
    consider_compile = compile_flag is True or max_iters >= CUDA_COMPILE_MIN_ITERS
    allowed = allowed_variants(
        compile_flag,
        graphs_flag,
        fused_flag,
        consider_compile=consider_compile,
        fused_ok=fused_ok,
        graphs_ok=graphs_ok,
    )
    if len(allowed) == 1:
        return allowed[0], {}
    result = probe_variants(device, precision, channels_last, [v.name for v in allowed], compile_mode)
    timings = dict(result["timings_ms"])
    return BY_NAME[choose_variant(timings, float(result.get("compile_s", 0.0)), max_iters)], timings


def _from_record(
    recorded: Mapping[str, Any],
    precision: str,
    layout: bool | None,
    compile_flag: bool | None,
    graphs_flag: bool | None,
    fused_flag: bool | None,
    trainer: Mapping[str, Any],
    device: torch.device,
    *,
    fused_ok: bool,
    graphs_ok: bool,
) -> FastPath:
    """A resume (or a sweep's later job): the recorded choice, with explicit settings winning.

    A recorded graph or fused optimizer is kept only where it can run (a GPU run continued on a CPU
    trains eagerly); records from before these settings existed read as off, as those runs trained.
    """
    chosen_precision = precision if precision != "auto" else str(recorded["precision"])
    graphs = (
        graphs_flag if graphs_flag is not None else bool(recorded.get("cuda_graphs", False)) and graphs_ok
    )
    fused = (
        fused_flag if fused_flag is not None else bool(recorded.get("fused_optimizer", False)) and fused_ok
    )
    # A captured update needs the fused optimizer (an explicit false turns a recorded graph off) and no
    # fp16 GradScaler.
    graphs = graphs and fused_flag is not False and chosen_precision != "fp16"
    fused = fused or graphs
    explicit_mode = str(trainer.get("compile_mode", "auto")) != "auto"
    mode = _compile_mode(trainer["compile_mode"], device) if explicit_mode else None
    return FastPath(
        precision=chosen_precision,
        channels_last=layout if layout is not None else bool(recorded["channels_last"]),
        compile=compile_flag if compile_flag is not None else bool(recorded["compile"]),
        chosen_by="recorded",
        cuda_graphs=graphs,
        fused_optimizer=fused,
        compile_mode=mode or str(recorded.get("compile_mode", RECORDED_COMPILE_MODE)),
    )
