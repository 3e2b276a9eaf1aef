"""`cnnbench train`, `config`, `resume` and `bench`: the commands that compose a config, then train or
time it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli.app import FORWARD, GROUPS_EPILOG, MultirunOpt, OverridesArg, app, run


@app.command(context_settings=FORWARD, epilog=GROUPS_EPILOG)
def train(overrides: OverridesArg = None, multirun: MultirunOpt = False) -> None:
    """Train one run (or sweep with -m). Overrides pick the model, depth, data, optimizer, schedule...

    Examples:

      cnnbench train model=resnet depth=56

      cnnbench train data=digits model=plain depth=20 trainer.max_iters=300

      cnnbench train -m model=plain,resnet depth=20,32,44,56

      cnnbench train -m experiment=degradation_quick

    Hydra's own flags pass through: --cfg job, --info, --hydra-help, hydra.run.dir=..., hydra/launcher=joblib.

    A sweep ends with report.png/.md/.csv in its folder; hydra.callbacks.report.enabled=false skips them.
    """
    from cnnbench.commands.train import train as train_body

    run(lambda: train_body(list(overrides or []), multirun))


@app.command(context_settings=FORWARD, epilog=GROUPS_EPILOG)
def config(
    overrides: OverridesArg = None,
    multirun: Annotated[
        bool,
        typer.Option(
            "--multirun", "-m", help="List the jobs the sweep would launch (overrides, folders); train none."
        ),
    ] = False,
) -> None:
    """Print the composed config for OVERRIDES, or with -m the jobs of a sweep.

    Hydra's flags pass through: --cfg job|hydra|all (default: job), -p/--package KEY (one section, e.g.
    -p trainer), --resolve, --info.

    Examples:

      cnnbench config model=plain depth=56 data=digits

      cnnbench config -m experiment=degradation_quick

      cnnbench config -p schedule --resolve experiment=resnet110
    """
    from cnnbench.commands.train import config as config_body

    run(lambda: config_body(list(overrides or []), multirun))


@app.command()
def resume(
    directory: Annotated[
        Path,
        typer.Argument(
            help="A run folder, or a multirun folder (resumes every unfinished job).", show_default=False
        ),
    ],
) -> None:
    """Continue an interrupted run, or every unfinished job of a sweep, exactly where it stopped.

    Example: cnnbench resume outputs/resnet56/2026-11-23_14-12-03_123456
    """
    from cnnbench.commands.train import resume as resume_body

    run(lambda: resume_body(directory))


@app.command(context_settings=FORWARD, epilog=GROUPS_EPILOG)
def bench(
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (for scripts).")] = False,
    baseline: Annotated[bool, typer.Option(help="Also time the DataLoader baseline.")] = True,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Measure the fast-path candidates (precision x memory layout) on this machine again, "
            "update the cache that auto settings read, and show them.",
        ),
    ] = False,
    iters: Annotated[
        int | None,
        typer.Option(help="Timed steps per window (default: sized to --window)."),
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed steps first (default 3).")] = None,
    repeats: Annotated[
        int | None,
        typer.Option(help="Timed windows per loop; the median counts (default 5)."),
    ] = None,
    window: Annotated[float | None, typer.Option(help="Seconds per timed window (default 2).")] = None,
    eval_images: Annotated[
        int | None,
        typer.Option(
            help="Test images timed for evaluation (default: sized to --window).", show_default=False
        ),
    ] = None,
) -> None:
    """Training and evaluation throughput, against a minimal hand-written loop and a DataLoader baseline.

    Measures img/s, the pure model step and the loop's overhead over it, and peak memory; times the
    minimal loop (data resident, batched crop/flip, the same precision and layout) interleaved with the
    full training step; then a baseline written the way popular CIFAR ResNet reimplementations are (PIL +
    per-sample transforms + DataLoader workers, fp32 NCHW) on the same model, data and batch size.

    Without data= (or experiment=) the data is synthetic (CIFAR-sized random images, no download). The
    default 64k iterations compile the model (trainer.compile=auto).

    Example: cnnbench bench model=resnet depth=56 data=synthetic --repeats 7
    """
    from cnnbench.commands.bench import run_bench, run_probe
    from cnnbench.commands.bench_protocol import BenchProtocol
    from cnnbench.commands.launch import check_flags

    args = list(overrides or [])
    protocol = {
        "iters": iters,
        "warmup": warmup,
        "repeats": repeats,
        "window": window,
        "eval_images": eval_images,
    }
    given = {key: value for key, value in protocol.items() if value is not None}

    def body() -> None:
        check_flags("bench", args, hydra=False)
        if probe:
            run_probe(args, as_json=as_json)
        else:
            run_bench(args, as_json=as_json, with_baseline=baseline, protocol=BenchProtocol(**given))

    run(body)
