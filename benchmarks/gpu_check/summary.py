"""The GPU check's summary: the machine, the targets judged on the measured figures, the sweep's
estimate, as summary.json, and the same as markdown (summary.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .profiles import PAPER_ITERS, SCHEMA_VERSION, SWEEP_DEPTHS, TARGETS, Profile

if TYPE_CHECKING:
    from .runner import StepResult


def machine_of(env: dict[str, Any]) -> dict[str, Any]:
    smi = ((env.get("nvidia_smi") or {}).get("gpus") or [{}])[0]
    return {
        "gpu": env.get("gpu") or smi.get("name"),
        "gpu_count": env.get("gpu_count"),
        "driver": smi.get("driver_version"),
        "gpu_memory": smi.get("memory.total"),
        "compute_capability": env.get("capability") or smi.get("compute_cap"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "nccl": env.get("nccl"),
        "python": env.get("python"),
        "cpu_count": env.get("cpu_count"),
        "platform": env.get("platform"),
        "mps_running_at_start": env.get("mps_running"),
    }


def step_ms(results: dict[str, Any], depth: int) -> tuple[float | None, str | None]:
    """ResNet-<depth>'s measured training step: `auto` (what `cnnbench train` runs), else the fastest
    candidate; and which it was."""
    auto = results.get(f"auto_resnet{depth}")
    if auto:
        return auto["train_step_ms"], "auto"
    cands = results.get(f"candidates_resnet{depth}")
    if cands:
        return cands["variants"][cands["fastest"]]["step_ms"], f"candidate {cands['fastest']}"
    return None, None


def sweep_estimates(results: dict[str, Any]) -> dict[str, Any]:
    """The 8-network sweep's time, one job at a time and with jobs sharing the GPU, from the measured
    ResNet-20 and ResNet-56 steps (32 and 44 interpolated linearly in depth; a plain net of a depth
    taken as its ResNet: the same convolutions, no shortcut additions) and the measured sharing speed-up."""
    t20, source20 = step_ms(results, 20)
    t56, source56 = step_ms(results, 56)
    if t20 is None or t56 is None:
        return {}
    per_depth = {d: t20 + (t56 - t20) * (d - 20) / 36 for d in SWEEP_DEPTHS}
    one_at_a_time = sum(2 * PAPER_ITERS * ms / 1e3 for ms in per_depth.values())
    out: dict[str, Any] = {
        "step_ms_by_depth": per_depth,
        "sources": [source20, source56],
        "one_at_a_time_s": one_at_a_time,
    }
    best = (results.get("jobs_per_gpu") or {}).get("best")
    if best and best.get("speedup_vs_one"):
        out["shared_s"] = one_at_a_time / best["speedup_vs_one"]
        out["sharing"] = best
    return out


def evaluate_targets(profile: Profile, results: dict[str, Any], total_s: float) -> list[dict[str, Any]]:
    sweep = sweep_estimates(results)
    measured = {
        "resnet20_64k_s": step_ms(results, 20)[0],
        "resnet56_64k_s": step_ms(results, 56)[0],
        "sweep_shared_s": sweep.get("shared_s"),
        "sweep_one_at_a_time_s": sweep.get("one_at_a_time_s"),
        "loop_overhead_resnet20_pct": (results.get("auto_resnet20") or {}).get("loop_overhead_pct"),
        "loop_overhead_resnet56_pct": (results.get("auto_resnet56") or {}).get("loop_overhead_pct"),
        "check_total_s": total_s,
    }
    for key in ("resnet20_64k_s", "resnet56_64k_s"):
        if measured[key] is not None:
            measured[key] = PAPER_ITERS * measured[key] / 1e3
    targets = []
    for key, (what, limit, unit) in TARGETS.items():
        value = measured[key]
        applies = profile.name == "gpu"
        targets.append(
            {
                "key": key,
                "what": what,
                "limit": limit,
                "unit": unit,
                "measured": value,
                "pass": (value <= limit) if applies and value is not None else None,
                "note": None if applies else "dry run: CPU and tiny sizes, not a measurement",
            }
        )
    return targets


def build_summary(
    profile: Profile,
    steps: list[StepResult],
    results: dict[str, Any],
    install: dict[str, Any],
    total_s: float,
) -> dict[str, Any]:
    env = results.get("environment") or {}
    return {
        "schema": SCHEMA_VERSION,
        "mode": profile.name,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": round(total_s, 1),
        "budget_seconds": profile.total_budget_s,
        "install": install,
        "machine": machine_of(env),
        "profile": asdict(profile),
        "steps": [asdict(s) for s in steps],
        "targets": evaluate_targets(profile, results, total_s),
        "sweep_estimate": sweep_estimates(results),
        "results": results,
    }


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def summary_markdown(summary: dict[str, Any]) -> str:
    m, r = summary["machine"], summary["results"]
    dry = summary["mode"] != "gpu"
    title = "# cnnbench GPU check" + (
        " (DRY RUN: CPU, tiny sizes; no figure here is a measurement)" if dry else ""
    )
    lines = [
        title,
        "",
        f"Machine: {m['gpu'] or 'no GPU'} (x{m['gpu_count'] or 0}, compute capability "
        f"{_fmt(m['compute_capability'])}, {_fmt(m['gpu_memory'])}), driver {_fmt(m['driver'])}; "
        f"torch {_fmt(m['torch'])}, CUDA {_fmt(m['cuda'])}, cuDNN {_fmt(m['cudnn'])}, "
        f"NCCL {_fmt(m['nccl'])}; "
        f"Python {_fmt(m['python'])}, {_fmt(m['cpu_count'])} CPUs. Finished {summary['finished_at']}, "
        f"{summary['total_seconds']:.0f} s in all (budget {summary['budget_seconds']:.0f} s).",
        "",
        "## Targets",
        "",
        "| target | limit | measured | pass |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in summary["targets"]:
        verdict = {True: "**pass**", False: "**FAIL**", None: "n/a"}[t["pass"]]
        measured = _fmt(t["measured"], " " + t["unit"])
        lines.append(f"| {t['what']} | {t['limit']:g} {t['unit']} | {measured} | {verdict} |")
    est = summary["sweep_estimate"]
    if est:
        lines += [
            "",
            f"64k-iteration times are the measured median training step x 64,000 (from "
            f"{', '.join(est['sources'])}); the sweep's depths 32 and 44 are interpolated linearly between "
            f"20 and 56, plain nets taken as their ResNet; the shared sweep divides by the best measured "
            f"sharing speed-up ({_fmt((est.get('sharing') or {}).get('speedup_vs_one'), 'x', 2)}, "
            f"{(est.get('sharing') or {}).get('mechanism', '–')}, "
            f"k = {(est.get('sharing') or {}).get('jobs_per_gpu', '–')}, uncompiled ResNet-20 jobs).",
        ]
    lines += [
        "",
        "## Steps",
        "",
        "| step | status | seconds | budget | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for s in summary["steps"]:
        note = (s["reason"] or "").replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']:.0f} | {note} |")
    lines += _bench_tables(r) + _jobs_tables(r.get("jobs_per_gpu")) + _sweep_table(r.get("sweep_quick"))
    lines += _tests_table(r.get("cuda_tests"))
    lines += [
        "",
        "Commands, exit codes and output tails: check.log. How these figures go into README.md and "
        'docs/performance.md: docs/performance.md, "The GPU check".',
        "",
    ]
    return "\n".join(lines)


def _bench_tables(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Training step by fast-path candidate (batch 128, synthetic CIFAR-sized data)",
        "",
        "| net | candidate | ms / step | img/s | 64k iterations | timed steps | first step s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for depth in (20, 56):
        for step in (f"candidates_resnet{depth}", f"variants_resnet{depth}", f"compiled_resnet{depth}"):
            for name, v in ((r.get(step) or {}).get("variants") or {}).items():
                if "step_ms" not in v:
                    lines.append(f"| ResNet-{depth} | {name} | failed: {v.get('error', '')[:200]} | | | | |")
                    continue
                first = _fmt((v.get("warmup_s") or [None])[0])
                lines.append(
                    f"| ResNet-{depth} | {name} | {v['step_ms']:.2f} | {v['img_per_s']:,.0f} | "
                    f"{v['est_64k_s']:,.0f} s | {v['timed_steps']} | {first} |"
                )
    lines += [
        "",
        "## `cnnbench bench` with the defaults (`auto`)",
        "",
        "| net | fast path | step ms | pure step ms | loop overhead | vs minimal loop | input ms "
        "| eval img/s "
        "| 64k (+ eval) | peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for depth in (20, 56):
        a = r.get(f"auto_resnet{depth}")
        if not a:
            continue
        fp = a.get("fast_path") or {}
        path = ", ".join(f"{k}={v}" for k, v in fp.items() if k not in ("timings_ms", "variant_timings_ms"))
        cells = [
            _fmt(a.get("train_step_ms"), "", 2),
            _fmt(a.get("pure_step_ms"), "", 2),
            _fmt(a.get("loop_overhead_pct"), "%"),
            _fmt(a.get("vs_minimal"), "x", 3),  # the minimal hand-written loop's step time / cnnbench's
            _fmt(a.get("input_ms"), "", 2),
            _fmt(a.get("eval_img_per_s"), "", 0),
            f"{_fmt(a.get('est_64k_s'), ' s', 0)} ({_fmt(a.get('est_64k_with_eval_s'), ' s', 0)})",
            _fmt(a.get("peak_memory_mb"), "", 0),
        ]
        lines.append(f"| ResNet-{depth} | {path} | " + " | ".join(cells) + " |")
    return lines


def _jobs_tables(jobs: dict[str, Any] | None) -> list[str]:
    if not jobs:
        return []
    lines = [
        "",
        "## Several jobs per GPU (aggregate img/s of k concurrent ResNet-20 jobs)",
        "",
        f"Workload: `{jobs.get('workload')}`, {_fmt(jobs.get('seconds_per_window'))} s windows.",
        "",
        "| mechanism | k | aggregate img/s | vs one job alone | per job img/s | peak MiB per job |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for mechanism in ("processes", "mps", "streams"):
        measured = jobs.get(mechanism) or {}
        if measured.get("status") != "ok":
            lines.append(
                f"| {mechanism} | | | | {measured.get('status', '–')}: {measured.get('reason', '')} | |"
            )
            continue
        for k, v in measured["k"].items():
            if "img_per_s" not in v:
                lines.append(f"| {mechanism} | {k} | | | {v.get('status')}: {v.get('reason')} | |")
                continue
            per_job = ", ".join(f"{x:,.0f}" for x in v.get("per_job_img_per_s", []))
            lines.append(
                f"| {mechanism} | {k} | {v['img_per_s']:,.0f} | {_fmt(v.get('speedup_vs_one'), 'x', 2)} | "
                f"{per_job} | {_fmt(v.get('peak_memory_mb'), '', 0)} |"
            )
    best = jobs.get("best")
    if best:
        lines += [
            "",
            f"Fastest: {best['mechanism']}, k = {best['jobs_per_gpu']} "
            f"({_fmt(best.get('speedup_vs_one'), 'x', 2)} one job alone). Cached for "
            f"`CNNBENCH_JOBS_PER_GPU=auto`: {json.dumps((jobs.get('cache') or {}).get('auto_resolves_to'))}.",
        ]
    return lines


def _sweep_table(sweep: dict[str, Any] | None) -> list[str]:
    if not sweep:
        return []
    lines = [
        "",
        f"## Quick degradation sweep, end to end ({sweep['wall_s']:.1f} s, "
        f"{sweep['jobs_per_gpu']} jobs at once per GPU, launcher n_jobs {sweep.get('launcher_n_jobs')})",
        "",
        "| job | status | iterations | train error | test error | seconds | device | sharing |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for j in sweep["jobs"]:
        lines.append(
            f"| {j['job']} | {j['status']} | {j['iteration']} | {_fmt(j['train_error'], '', 4)} | "
            f"{_fmt(j['test_error'], '', 4)} | {_fmt(j['elapsed_seconds'])} | {j['device']} | "
            f"{json.dumps(j['gpu_sharing'])} |"
        )
    return lines


def _tests_table(tests: dict[str, Any] | None) -> list[str]:
    if not tests:
        return []
    lines = [
        "",
        f"## CUDA tests ({', '.join(tests['files'])})",
        "",
        "| test | outcome | seconds |",
        "| --- | --- | ---: |",
    ]
    for t in tests["tests"]:
        lines.append(f"| {t['id']} | {t['outcome']} | {_fmt(t.get('seconds'))} |")
    return lines
