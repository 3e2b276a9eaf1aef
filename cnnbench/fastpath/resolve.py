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
(``fastpath.json`` in the sweep folder); an explicit setting always wins. What a run asks is read from its
config once, into a ``request.FastPathRequest``; ``resolve`` answers it.
"""

from __future__ import annotations

from dataclasses import replace

from cnnbench.core.cache import locked, read_json, write_json
from cnnbench.core.device import CPU_COMPILE_MIN_ITERS, CUDA_COMPILE_MIN_ITERS
from cnnbench.fastpath.choice import (
    BY_NAME,
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
from cnnbench.fastpath.request import FastPathRequest

# What a run records of the probe answer it used (env.json ``fast_path.probe_record``): when it was measured
# (its cache entry, for the steady-state check), whether it was provisional, and the noise it was measured in.
PROBE_RECORD_KEYS = ("measured_at", "provisional", "other_cpu_pct", "spread_pct")


def resolve(request: FastPathRequest) -> FastPath:
    """The settings for a run: explicit config > the run's record (resume) > the sweep's > the probe."""
    r = request
    cuda = r.device.type == "cuda"
    graphs_ok = r.graphs_ok and cuda and (r.mode not in INDUCTOR_GRAPH_MODES or r.compile is False)
    graphs_flag, fused_flag = r.cuda_graphs, r.fused_optimizer
    if not cuda:
        # The CPU default stays what it was: no graphs, the optimizer's own (foreach) implementation.
        graphs_flag = False
        fused_flag = False if fused_flag is None else fused_flag
    if r.recorded:
        return _from_record(r, graphs_flag, fused_flag, graphs_ok)
    fixed = None not in (r.channels_last, r.compile, graphs_flag, fused_flag)
    if r.precision != "auto" and fixed:
        return FastPath(
            r.precision,
            r.channels_last,
            r.compile,
            chosen_by="config",
            cuda_graphs=graphs_flag,
            fused_optimizer=fused_flag,
            compile_mode=r.mode,
        )
    if r.sweep_record is not None:
        with locked(r.sweep_record):
            shared = read_json(r.sweep_record)
            if not shared:
                shared = resolve(replace(r, sweep_record=None)).record()
                write_json(r.sweep_record, shared)
        chosen = resolve(replace(r, recorded=shared, sweep_record=None))
        return replace(chosen, chosen_by="sweep")

    # Both fixed by the config: nothing for the precision/layout probe to choose (it costs ~10 s on a
    # CPU); compiling and the CUDA update variants are still decided below.
    precision, layout = r.precision, r.channels_last
    probed = precision == "auto" or layout is None
    result = probe(r.device) if probed else {"timings_ms": {}}
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
    compile_flag = r.compile
    if cuda:
        variant, variant_timings = _cuda_variant(
            r,
            chosen_precision,
            chosen_layout,
            graphs_flag,
            fused_flag,
            graphs_ok=graphs_ok and chosen_precision != "fp16",
        )
        compile_flag, graphs, fused = variant.compile, variant.graphs, variant.fused
    else:
        graphs, fused = False, bool(fused_flag)
        if compile_flag is None:
            if r.max_iters >= CPU_COMPILE_MIN_ITERS:
                compile_flag = bool(probe_compile(r.device, chosen_precision, chosen_layout)["compile"])
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
        compile_mode=r.mode,
        variant_timings_ms=variant_timings,
    )


def _cuda_variant(
    request: FastPathRequest,
    precision: str,
    channels_last: bool,
    graphs_flag: bool | None,
    fused_flag: bool | None,
    *,
    graphs_ok: bool,
) -> tuple[Variant, dict[str, float]]:
    """How to run the update on CUDA: measured among the variants the settings allow (one: no probe)."""
    r = request
    consider_compile = r.compile is True or r.max_iters >= CUDA_COMPILE_MIN_ITERS
    allowed = allowed_variants(
        r.compile,
        graphs_flag,
        fused_flag,
        consider_compile=consider_compile,
        fused_ok=r.fused_ok,
        graphs_ok=graphs_ok,
    )
    if len(allowed) == 1:
        return allowed[0], {}
    result = probe_variants(r.device, precision, channels_last, [v.name for v in allowed], r.mode)
    timings = dict(result["timings_ms"])
    return BY_NAME[choose_variant(timings, float(result.get("compile_s", 0.0)), r.max_iters)], timings


def _from_record(
    request: FastPathRequest, graphs_flag: bool | None, fused_flag: bool | None, graphs_ok: bool
) -> FastPath:
    """A resume (or a sweep's later job): the recorded choice, with explicit settings winning.

    A recorded graph or fused optimizer is kept only where it can run (a GPU run continued on a CPU
    trains eagerly); records from before these settings existed read as off, as those runs trained.
    """
    r, recorded = request, request.recorded
    chosen_precision = r.precision if r.precision != "auto" else str(recorded["precision"])
    graphs = (
        graphs_flag if graphs_flag is not None else bool(recorded.get("cuda_graphs", False)) and graphs_ok
    )
    fused = (
        fused_flag if fused_flag is not None else bool(recorded.get("fused_optimizer", False)) and r.fused_ok
    )
    # A captured update needs the fused optimizer (an explicit false turns a recorded graph off) and no
    # fp16 GradScaler.
    graphs = graphs and fused_flag is not False and chosen_precision != "fp16"
    fused = fused or graphs
    return FastPath(
        precision=chosen_precision,
        channels_last=r.channels_last if r.channels_last is not None else bool(recorded["channels_last"]),
        compile=r.compile if r.compile is not None else bool(recorded["compile"]),
        chosen_by="recorded",
        cuda_graphs=graphs,
        fused_optimizer=fused,
        compile_mode=r.compile_mode or str(recorded.get("compile_mode", RECORDED_COMPILE_MODE)),
    )
