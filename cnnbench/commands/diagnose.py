"""`cnnbench analyze` and `cnnbench landscape`: the diagnostics' computations, with what they print.

The Python API (``cnnbench.analyze`` / ``cnnbench.landscape``) calls the same computations and returns
their rows and figures instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnbench.errors import print_error

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def analyze_command(
    run_dirs: list[Path], out: Path | None, samples: int | None, at_init: bool, device: str
) -> int:
    """Analyze the runs, write analysis.png/.csv and print one line per run."""
    from cnnbench.diagnostics.responses import analyze

    result = analyze(run_dirs, out, samples, at_init, device)
    for a in result.analyses:
        where = "BN output" if a.measured_at == "bn_output" else "conv output (no BN right after the convs)"
        print(
            f"{a.label}: {len(a.layers)} 3x3 layers, response = {where}, std {min(a.stds):.3g}-"
            f"{max(a.stds):.3g} over {a.samples} test images"
        )
    print(f"Wrote {result.png} and {result.csv}.")
    return 0


def landscape_command(run_dirs: list[Path], **options: Any) -> int:
    """Compute the landscape (``options``: those of ``diagnostics.landscape.landscape``); Ctrl-C or an
    unfinished grid keeps the finished points and exits 130 with how to continue."""
    from cnnbench.diagnostics.landscape import landscape

    try:
        result = landscape(run_dirs, **options)
    except KeyboardInterrupt:
        print_error(
            "Aborted. The points finished so far are in landscape.csv; run the same command to continue."
        )
        return INTERRUPTED
    speed = f", {result.images_per_s:,.0f} img/s" if result.images_per_s else ""
    print(f"{result.done}/{result.total} points in {result.csv} ({result.seconds:.1f} s{speed}).")
    if not result.complete:
        print_error(
            f"Stopped after {result.done} of {result.total} points (kept in {result.csv}). Run the same "
            "command to continue."
        )
        return INTERRUPTED
    print(f"Wrote {result.png}.")
    return 0
