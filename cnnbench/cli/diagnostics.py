"""`cnnbench analyze` and `cnnbench landscape`: what trained runs look like inside (He et al. 2016, Figure 7;
Li et al. 2018)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli.app import DeviceOpt, RunsArg, app, run
from cnnbench.commands.choices import LandscapePrecision

OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Where to write the files (default: the run folder for one run, . for several)."
    ),
]


@app.command()
def analyze(
    run_dirs: RunsArg,
    out: OutOpt = None,
    samples: Annotated[
        int | None,
        typer.Option(
            help="Test images for the response std (default: 1000, or the whole test set if smaller)."
        ),
    ] = None,
    at_init: Annotated[
        bool, typer.Option("--at-init", help="Also the gradient norms at initialization (the run's seed).")
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Layer responses (He et al. 2016, Figure 7) and per-layer gradient norms of trained runs.

    For every 3x3 conv layer: the std of its response (the BN output, before ReLU and the shortcut
    addition; the conv output for pre-activation nets) over test images, in network order and sorted; and
    the weight-gradient norm on one fixed training batch. Writes analysis.png and analysis.csv.

    Example: cnnbench analyze outputs/multirun/<stamp>/depth=56,model=* --at-init
    """
    from cnnbench.commands.diagnose import analyze_command

    run(lambda: analyze_command(list(run_dirs), out, samples, at_init, device))


@app.command()
def landscape(
    run_dirs: RunsArg,
    dims: Annotated[
        int, typer.Option(min=1, max=2, help="1: a curve along one direction; 2: a surface over two.")
    ] = 1,
    resolution: Annotated[int, typer.Option(help="Grid points per axis.")] = 51,
    span: Annotated[float, typer.Option(help="The grid covers [-span, span] times each direction.")] = 1.0,
    samples: Annotated[
        int | None,
        typer.Option(help="Training images per grid point (default: 2048, or the training set if smaller)."),
    ] = None,
    out: OutOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random directions and the image sample.")] = 0,
    precision: Annotated[
        LandscapePrecision, typer.Option(help="bf16 autocast is faster on CPUs with bf16.")
    ] = LandscapePrecision.fp32,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run grids of over 10,000 points (all runs) too.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Delete a landscape with other settings in --out and start over."),
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Loss landscape of trained runs along filter-normalized random directions (Li et al. 2018).

    Loss and error at w + alpha*d1 (+ beta*d2) on a fixed, seeded sample of training images (BN in eval
    mode); biases and BN parameters are not moved. Writes landscape.csv (a row per point, as each
    finishes), landscape.json (the settings) and landscape.png, and logs the figure to each run's
    TensorBoard (landscape/1d or landscape/2d). Ctrl-C keeps the finished points: run the same command
    again to continue.

    Example: cnnbench landscape RUN_A RUN_B --resolution 21 --samples 512 --out landscape
    """
    from cnnbench.commands.diagnose import landscape_command

    options = dict(dims=dims, resolution=resolution, span=span, samples=samples, out=out, seed=seed)
    options |= dict(precision=precision.value, yes=yes, restart=restart, device=device)
    run(lambda: landscape_command(list(run_dirs), **options))
