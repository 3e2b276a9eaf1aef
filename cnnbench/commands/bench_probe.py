"""`cnnbench bench --probe`: the fast-path candidates measured again on this machine, the choice marked."""

from __future__ import annotations

import json
from typing import Any

from cnnbench.commands.bench_protocol import BenchProtocol, compose_config
from cnnbench.fastpath.workload import matmul_peak_gflops


def run_probe(overrides: list[str], as_json: bool = False) -> dict[str, Any]:
    """`cnnbench bench --probe`: measure the fast-path candidates on this machine again (updating the
    cache that ``auto`` settings read) and show them, the choice marked."""
    from rich.console import Console
    from rich.table import Table

    from cnnbench.core.cache import cache_dir
    from cnnbench.core.device import resolve_device
    from cnnbench.fastpath.choice import PROBE_BATCH, PROBE_DEPTH, parse_candidate
    from cnnbench.fastpath.probe import probe
    from cnnbench.launchers.slots import job_device

    _, overrides = BenchProtocol.from_overrides(overrides)
    cfg = compose_config(overrides)
    device = resolve_device(job_device(cfg.trainer.device))
    err = Console(stderr=True, highlight=False)
    with err.status(f"cnnbench bench --probe: timing each candidate on {device}"):
        result = probe(device, reprobe=True, announce=False)
        peaks = {
            precision: matmul_peak_gflops(device, precision)
            for precision in sorted({parse_candidate(name)[0] for name in result["timings_ms"]})
        }
    result = {**result, "matmul_peak_gflops": peaks}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    fastest = min(result["timings_ms"].values())
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu')}, {machine.get('threads')} threads"
    table = Table(
        title=f"Fast-path probe: ResNet-{PROBE_DEPTH} model update, batch {PROBE_BATCH}, on {where}",
        caption=(
            f"Flags: {' '.join(machine.get('flags', [])) or '-'}; torch {machine['torch']}. Took "
            f"{result['probe_seconds']:.1f} s; cached in {cache_dir()}. Matmul peak: "
            + ", ".join(f"{p} {g:,.0f} GFLOP/s" for p, g in peaks.items())
            + ". trainer.precision=auto / trainer.channels_last=auto use the marked choice."
        ),
        title_justify="left",
        caption_justify="left",
    )
    for column in ("candidate", "ms / step", "img/s", "vs fastest", ""):
        table.add_column(column, justify="left" if column in ("candidate", "") else "right")
    for name, ms in sorted(result["timings_ms"].items(), key=lambda item: item[1]):
        chosen = "[bold green]<- auto[/bold green]" if name == result["choice"] else ""
        table.add_row(name, f"{ms:.1f}", f"{PROBE_BATCH * 1e3 / ms:,.0f}", f"{ms / fastest:.2f}x", chosen)
    Console(highlight=False).print(table)
    return result
