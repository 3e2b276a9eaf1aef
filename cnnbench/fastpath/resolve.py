"""The fast path chosen by measurement: precision, memory layout, compile, CUDA graphs and fused optimizer.

CPU flags do not say what is fast: a CPU that reports AVX512-BF16 can run bf16 convolutions at half the
fp32 speed, and another with AMX at seven times. So ``trainer.precision=auto`` and
``trainer.channels_last=auto`` are decided by timing the real model update (``update.step.model_step``)
of the reference workload, ResNet-20 at batch 128 on 32x32 images, under each candidate (fp32 / bf16 x
channels-last / NCHW on a CPU; bf16 / fp16 / fp32 x layouts on a GPU). ``trainer.compile=auto`` on a
CPU is measured too (eager vs compiled, same workload), but only when a run of at least
``CPU_COMPILE_MIN_ITERS`` iterations asks: compiling costs tens of seconds, which only a long run
repays.

On CUDA a second stage times the ways of running the update for the chosen precision and layout
(``VARIANTS``): eager or compiled, foreach or fused optimizer, with or without the whole update captured
as a CUDA graph (``update/graphs.py``); the compiled ones only for runs of at least
``CUDA_COMPILE_MIN_ITERS`` iterations, and a compiled variant wins only if its measured gain over the
run repays its measured compilation time. ``trainer.cuda_graphs`` and ``trainer.fused_optimizer``
follow it. On the CPU both stay off unless asked for: the CPU default stays what it was, bit for bit.

The result is cached per machine (device name, the CPU flags that matter, thread count, torch version)
in ``$CNNBENCH_CACHE`` (default ``~/.cache/cnnbench``), under a file lock so that parallel jobs probe
once. A probe measured beside other work, or whose rounds disagree, is measured again a bounded number of
times; if it stays noisy its answer is used provisionally and measured again at a later idle start
(``probe.measure_until_clean``). A run records what it used (env.json, checkpoint, TensorBoard hparams);
a resume reuses that record and never probes; the jobs of one sweep share the first job's choice
(``fastpath.json`` in the sweep folder); an explicit setting always wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.cache import locked
from cnnbench.core.cache import read_json as _read
from cnnbench.core.cache import write_json as _write
from cnnbench.core.device import CPU_COMPILE_MIN_ITERS, CUDA_COMPILE_MIN_ITERS, resolve_precision
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.choice import (
    BY_NAME,
    COMPILE_MODES,
    CPU_COMPILE_MODE,
    CUDA_COMPILE_MODE,
    INDUCTOR_GRAPH_MODES,
    RECORDED_COMPILE_MODE,
    FastPath,
    Variant,
    allowed_variants,
    choose,
    choose_variant,
    parse_candidate,
)
from cnnbench.fastpath.cuda import probe_variants
from cnnbench.fastpath.probe import probe, probe_compile

# What a run records of the probe answer it used (env.json ``fast_path.probe_record``): when it was measured
# (its cache entry, for the steady-state check), whether it was provisional, and the noise it was measured in.
PROBE_RECORD_KEYS = ("measured_at", "provisional", "other_cpu_pct", "spread_pct")


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

    # Both fixed by the config: nothing for the precision/layout probe to choose (it costs ~10 s on a
    # CPU); compiling and the CUDA update variants are still decided below.
    probed = precision == "auto" or layout is None
    result = probe(device) if probed else {"timings_ms": {}}
    no_fp16 = graphs_flag is True  # a captured update cannot use fp16's GradScaler
    if not probed:
        chosen_precision, chosen_layout = precision, bool(layout)
    else:
        best_precision, best_layout = parse_candidate(result["choice"])
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
        chosen_by="config" if not probed else "cache" if result.get("cached") else "probe",
        timings_ms=dict(result["timings_ms"]),
        probe_record={key: result[key] for key in PROBE_RECORD_KEYS if key in result},
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
