"""The `cnnbench` command line: one function per command; heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cnnbench.errors import print_error

app = typer.Typer(
    name="cnnbench",
    help=(
        "Train plain and residual CIFAR nets and compare them (He et al. 2016, Figure 6). "
        "Runs land in outputs/; open them with `tensorboard --logdir outputs`."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
    pretty_exceptions_enable=False,
)

FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["--help"]}
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides, e.g. model=plain depth=56 trainer.max_iters=300 (and Hydra flags).",
        show_default=False,
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """A CnnbenchError inside becomes its one-paragraph message and the exit code; no traceback."""
    from cnnbench.errors import CnnbenchError

    try:
        yield
    except CnnbenchError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def run_hydra(args: list[str]) -> int:
    """Run the Hydra app with ``args`` as its command line; user errors become messages, not tracebacks."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cnnbench.errors import CnnbenchError

    # Hydra re-raises instead of printing its own trimmed traceback; we print the message alone.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    saved_argv = sys.argv
    sys.argv = ["cnnbench", *args]
    try:
        from cnnbench.app import hydra_app

        hydra_app()
    except CnnbenchError as exc:
        print_error(str(exc))
        return exc.exit_code
    except (HydraException, OmegaConfBaseException) as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        print_error(
            f"{exc}{cause}\nSee the available choices with `cnnbench config --help` and `cnnbench models`."
        )
        return 2
    finally:
        sys.argv = saved_argv
    return 0


@app.command(context_settings=FORWARD)
def train(
    overrides: OverridesArg = None,
    multirun: Annotated[
        bool,
        typer.Option(
            "--multirun",
            "-m",
            help="Sweep: one job per combination of comma-separated values (Hydra multirun).",
        ),
    ] = False,
) -> None:
    """Train one run (or sweep with -m). Overrides pick the model, depth, data, optimizer, schedule...

    Examples:

      cnnbench train model=resnet depth=56

      cnnbench train data=digits model=plain depth=20 trainer.max_iters=300

      cnnbench train -m model=plain,resnet depth=20,32,44,56

      cnnbench train -m experiment=degradation_quick

    Hydra's own flags pass through: --cfg job, --info, --hydra-help, hydra.run.dir=..., hydra/launcher=joblib.
    """
    args = list(overrides or [])
    if multirun and {"--cfg", "-c", "--info", "-i"} & set(args):
        print_error("--cfg/--info print one configuration; use them without -m/--multirun.")
        raise typer.Exit(2)
    ctx = distributed_setup(multirun)
    if ctx.rank > 0:
        # Rank 0 writes .hydra/ and train.log; the other ranks only train.
        args += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    raise typer.Exit(run_hydra((["--multirun"] if multirun else []) + args))


def distributed_setup(multirun: bool):
    """Under torchrun: join the process group and agree on rank 0's run folder stamp."""
    from cnnbench.distributed import context, init, share_run_stamp

    ctx = context()
    if ctx.enabled:
        if multirun:
            print_error(
                "torchrun trains one run over several processes; -m/--multirun is not supported there."
            )
            raise typer.Exit(2)
        init(ctx)
        share_run_stamp(ctx)
    return ctx


@app.command(context_settings=FORWARD)
def config(overrides: OverridesArg = None) -> None:
    """Print the composed config for OVERRIDES (groups: model, data, augment, optimizer, schedule, trainer,
    experiment).

    Example: cnnbench config model=plain depth=56 data=digits
    """
    raise typer.Exit(run_hydra([*(overrides or []), "--cfg", "job"]))


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
    with user_errors():
        if (directory / "multirun.yaml").is_file():
            from cnnbench.resume import resume_sweep

            raise typer.Exit(run_hydra(resume_sweep(directory)))
        from cnnbench.resume import resume_run

        raise typer.Exit(resume_run(directory))


@app.command()
def report(
    directories: Annotated[
        list[Path], typer.Argument(help="Run folders or sweep folders.", show_default=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write report.png/.md/.csv (default: the folder given, or ./report for several).",
        ),
    ] = None,
) -> None:
    """Figure 6 and Table 6 from run folders: report.png, report.md, report.csv, and a table here.

    Example: cnnbench report outputs/multirun/2026-11-23_14-12-03_123456
    """
    with user_errors():
        from rich.console import Console

        from cnnbench.report import make_report, print_report

        result = make_report(list(directories), out)
        # Piped into a file or a CI log, rich would wrap the table at 80 columns.
        print_report(result, Console(width=None if sys.stdout.isatty() else 160))


@app.command()
def models(
    depths: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated depths, e.g. 20,32,44,56,110 (default: each family's usual depths)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this family.")] = None,
    flops: Annotated[bool, typer.Option(help="Count FLOPs (slower for very deep nets).")] = True,
) -> None:
    """Parameters and FLOPs (one 32x32 image, forward) per model and depth, beside the papers' figures.

    Example: cnnbench models --depths 20,32,44,56,110
    """
    try:
        wanted = [int(d) for d in depths.split(",")] if depths else None
    except ValueError:
        print_error(f"--depths {depths!r} must be comma-separated integers, e.g. --depths 20,32,44,56.")
        raise typer.Exit(2) from None
    with user_errors():
        from rich.console import Console

        from cnnbench.models.summary import model_table

        Console().print(model_table(wanted, only=model, with_flops=flops))


@app.command(context_settings=FORWARD)
def bench(
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (for scripts).")] = False,
    baseline: Annotated[bool, typer.Option(help="Also time the DataLoader baseline.")] = True,
) -> None:
    """Training and evaluation throughput for the composed config, against a classic DataLoader baseline.

    Measures img/s, the pure model step and the loop's overhead over it, and peak memory; then times a
    baseline written the way popular CIFAR ResNet reimplementations are (PIL + per-sample transforms +
    DataLoader workers, fp32 NCHW) on the same model, data and batch size, and prints the speed-up.

    Without data= (or experiment=) the data is synthetic (CIFAR-sized random images, no download).
    Protocol options as overrides: bench.iters, bench.warmup, bench.repeats, bench.window (seconds per
    timed window), bench.eval_images. The default 64k iterations compile the model (trainer.compile=auto).

    Example: cnnbench bench model=resnet depth=56 data=synthetic
    """
    with user_errors():
        from cnnbench.bench import run_bench

        run_bench(list(overrides or []), as_json=as_json, with_baseline=baseline)


def main() -> None:
    # torchrun and `python -m cnnbench` enter here too.
    app()


if __name__ == "__main__":
    main()
