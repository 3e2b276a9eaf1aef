"""The `cnnbench` command line: one function per command; heavy imports happen inside commands."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from cnnbench.commands.launch import distributed_setup, launch, list_sweep_jobs
from cnnbench.core.overrides import HYDRA_FLAGS, groups_help, unknown_flags
from cnnbench.errors import print_error


class CnnbenchGroup(TyperGroup):
    """Every command's usage errors (an unknown option, a missing argument, a typo in a command) as the
    one-paragraph ``error:`` that every other refusal uses, with the command's help to look at."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # type: ignore[override]
        from typer._click import exceptions
        from typer.exceptions import Abort

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())  # `cnnbench` or `cnnbench data` alone: the help, exit 0
            code = 0
        except exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "cnnbench"
            message = exc.format_message().rstrip()
            print_error(f"{message}{'' if message.endswith(('.', '?')) else '.'} See `{where} -h`.")
            code = exc.exit_code
        except exceptions.ClickException as exc:
            print_error(exc.format_message())
            code = exc.exit_code
        except Abort:
            print_error("Aborted.")
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="cnnbench",
    cls=CnnbenchGroup,
    help=(
        "Train plain and residual CIFAR nets and compare them (He et al. 2016, Figure 6). "
        "Runs land in outputs/; open them with `tensorboard --logdir outputs`."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
    pretty_exceptions_enable=False,
)

# Commands that pass Hydra overrides (and Hydra's flags) through; -h/--help stay cnnbench's own help.
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
GROUPS_EPILOG = "Config groups (group=option):\n\n" + groups_help()


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from cnnbench.version import __version__

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        typer.echo(
            f"cnnbench {__version__} (torch {installed('torch')}, "
            f"hydra-core {installed('hydra-core')}, Python {sys.version.split()[0]})"
        )
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=version_callback, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train plain and residual CIFAR nets and compare them (He et al. 2016, Figure 6)."""


def refuse_unknown_flags(command: str, args: list[str], own: set[str], hydra: bool = True) -> None:
    """An option neither the command nor Hydra takes is refused (Hydra would read it as an override)."""
    bad = unknown_flags(args, (HYDRA_FLAGS if hydra else set()) | own)
    if bad:
        hint = " (Hydra's own flags pass through: --cfg job, --info, --hydra-help, ...)" if hydra else ""
        print_error(
            f"No such option for `cnnbench {command}`: {', '.join(bad)}{hint}. See `cnnbench {command} -h` "
            f"for its options; overrides are written without dashes (depth=56)."
        )
        raise typer.Exit(2)


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


@app.command(context_settings=FORWARD, epilog=GROUPS_EPILOG)
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
    refuse_unknown_flags("train", args, set())
    if multirun and {"--cfg", "-c", "--info", "-i"} & set(args):
        print_error("--cfg/--info print one configuration; use them without -m/--multirun.")
        raise typer.Exit(2)
    if multirun and not any(a.startswith("hydra/sweeper=") for a in args):
        # Every job's config is checked before the sweep folder is made or any job starts (a custom
        # sweeper proposes jobs as it goes: those are checked as they start).
        code = list_sweep_jobs(args, quiet=True, command="train")
        if code:
            raise typer.Exit(code)
    with user_errors():
        ctx = distributed_setup(multirun)
    if ctx.rank > 0:
        # Rank 0 writes .hydra/ and train.log; the other ranks only train.
        args += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    raise typer.Exit(launch((["--multirun"] if multirun else []) + args, "train"))


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
    from cnnbench.core.overrides import experiment_sweep, split_flags

    args = list(overrides or [])
    refuse_unknown_flags("config", args, set())
    given, flags = split_flags(args)
    if multirun:
        if {"--cfg", "-c", "-p", "--package", "--info", "-i"} & set(flags):
            print_error(
                "config -m lists a sweep's jobs; --cfg/-p/--info show one job's config. Drop -m and give the "
                "job's values, e.g. `cnnbench config experiment=degradation_quick model=plain depth=20`."
            )
            raise typer.Exit(2)
        raise typer.Exit(list_sweep_jobs(args))
    if not {"--cfg", "-c", "--info", "-i", "--hydra-help"} & set(flags):
        args += ["--cfg", "job"]
    code = launch(args, "config")
    sweep = experiment_sweep(given)
    unset = [key for key in sweep if not any(o.split("=", 1)[0] == key for o in given)]
    if code == 0 and unset:
        experiment = next(o for o in given if o.startswith("experiment="))
        typer.echo(
            f"note: {experiment} is a sweep ({'; '.join(f'{k}: {v}' for k, v in sweep.items())}); above is "
            f"its config before the swept values. List its jobs with `cnnbench config -m {experiment}`.",
            err=True,
        )
    raise typer.Exit(code)


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
        if not directory.exists():
            from cnnbench.errors import CnnbenchError

            raise CnnbenchError(
                f"{directory} does not exist. Give `cnnbench resume` a run folder "
                f"(outputs/<model><depth>/<stamp>) or a sweep folder (outputs/multirun/<stamp>); "
                f"`cnnbench status outputs/...` lists them."
            )
        if (directory / "multirun.yaml").is_file():
            from cnnbench.commands.resume import resume_sweep

            raise typer.Exit(launch(resume_sweep(directory)))
        from cnnbench.commands.resume import resume_run

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

        from cnnbench.reporting import make_report, print_report

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

        with Console(stderr=True).status("Building models...") as spinner:
            table, skipped = model_table(
                wanted,
                only=model,
                with_flops=flops,
                progress=lambda label: spinner.update(f"Counting {label}..."),
            )
        Console().print(table)
        if skipped:
            typer.echo("Skipped, not valid depths of the family (rules above): " + "; ".join(skipped) + ".")


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
    refuse_unknown_flags("bench", list(overrides or []), set(), hydra=False)
    with user_errors():
        if probe:
            from cnnbench.commands.bench import run_probe

            run_probe(list(overrides or []), as_json=as_json)
            return
        from cnnbench.commands.bench import run_bench

        run_bench(list(overrides or []), as_json=as_json, with_baseline=baseline)


@app.command(name="eval")
def eval_(
    directories: Annotated[
        list[Path], typer.Argument(help="Run folders or sweep folders.", show_default=False)
    ],
    split: Annotated[str, typer.Option(help="test, val (runs with data.val_size) or train.")] = "test",
    weights: Annotated[
        str,
        typer.Option(
            help="last (checkpoint.pt), best (best.pt: best validation error) or ema (the weights' "
            "moving average, trainer.ema_decay)."
        ),
    ] = "last",
    tta: Annotated[
        str, typer.Option(help="none, or flip: average the softmax of each image and its mirror.")
    ] = "none",
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Another dataset or data setting, repeatable: data=NAME (another dataset, from its "
            "conf/data/NAME.yaml) and KEY=VALUE or data.KEY=VALUE (one key of the data section), e.g. "
            "--data root=/data/cifar10-c --data val_size=5000.",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="run: the precision and memory layout the run's own evaluations used (what its "
            "trainer.precision=auto resolved to), so the numbers match its logged test error; or fp32, bf16, "
            "fp16 (autocast, in the run's memory layout)."
        ),
    ] = "run",
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (for scripts).")] = False,
) -> None:
    """Loss, error, per-class error and the confusion matrix of trained runs, in one table.

    Writes into each run folder eval.json (one entry per split/weights/TTA/precision/data, earlier entries
    kept), confusion.png (the latest evaluation) and the figure to TensorBoard (eval/confusion/<split>);
    nothing else is changed. Each distinct dataset is loaded once for all runs. Incomplete runs are
    evaluated and marked as such. Exit code 0: all evaluated; 1: some could not be; 2: none could.

    Examples:

      cnnbench eval outputs/resnet56/2026-11-23_14-12-03_123456

      cnnbench eval outputs/multirun/<stamp> --weights best --tta flip

      cnnbench eval RUN --data root=/data/cifar10-corrupted --json
    """
    with user_errors():
        from cnnbench.commands.evaluate import EvalOptions, eval_command, parse_data_overrides

        options = EvalOptions(
            split=split,
            weights=weights,
            tta=tta,
            data=parse_data_overrides(data or []),
            precision=precision,
            device=device,
        )
        code = eval_command(list(directories), options, as_json)
    raise typer.Exit(code)


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="A run folder.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="torchscript, onnx or state_dict.")] = "torchscript",
    weights: Annotated[str, typer.Option(help="last (checkpoint.pt), best (best.pt) or ema.")] = "last",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The file to write (default: RUN_DIR/export/model.ts.pt, ...)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """The trained network alone, loadable without cnnbench, plus a JSON sidecar (<file>.json).

    torchscript and onnx take float RGB images in [0, 1] (uint8 / 255), shape (N, 3, 32, 32), NCHW, with
    the run's normalization built in, and return logits. state_dict is the bare network's weights (no
    normalization; the sidecar names the architecture and holds the mean/std). onnx needs
    `pip install cnnbench[onnx]`.

    Example: cnnbench export outputs/resnet56/2026-11-23_14-12-03_123456 --weights best

    Then, in plain PyTorch: model = torch.jit.load("model.ts.pt"); logits = model(uint8_images.float() / 255)
    """
    with user_errors():
        from cnnbench.commands.export import export_run

        result = export_run(directory, fmt=fmt, weights=weights, out=out, force=force)
    note = "" if result.complete else " (the run is incomplete: these are its weights so far)"
    typer.echo(
        f"Wrote {result.path} ({result.format}, {result.weights} weights, iteration {result.iteration:,}"
        f"){note} and {result.sidecar}."
    )


@app.command()
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders to compare.", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write analysis.png/.csv (default: the run folder for one run, . for several).",
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            help="Test images for the response std (default: 1000, or the whole test set if smaller)."
        ),
    ] = None,
    at_init: Annotated[
        bool, typer.Option("--at-init", help="Also the gradient norms at initialization (the run's seed).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Layer responses (He et al. 2016, Figure 7) and per-layer gradient norms of trained runs.

    For every 3x3 conv layer: the std of its response (the BN output, before ReLU and the shortcut
    addition; the conv output for pre-activation nets) over test images, in network order and sorted; and
    the weight-gradient norm on one fixed training batch. Writes analysis.png and analysis.csv.

    Example: cnnbench analyze outputs/multirun/<stamp>/depth=56,model=* --at-init
    """
    with user_errors():
        from cnnbench.diagnostics.responses import analyze as run_analyze

        result = run_analyze(list(run_dirs), out, samples, at_init, device)
        for a in result.analyses:
            where = (
                "BN output" if a.measured_at == "bn_output" else "conv output (no BN right after the convs)"
            )
            typer.echo(
                f"{a.label}: {len(a.layers)} 3x3 layers, response = {where}, std {min(a.stds):.3g}-"
                f"{max(a.stds):.3g} over {a.samples} test images"
            )
        typer.echo(f"Wrote {result.png} and {result.csv}.")


@app.command()
def landscape(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders to compare.", show_default=False)],
    dims: Annotated[int, typer.Option(help="1: a curve along one direction; 2: a surface over two.")] = 1,
    resolution: Annotated[int, typer.Option(help="Grid points per axis.")] = 51,
    span: Annotated[float, typer.Option(help="The grid covers [-span, span] times each direction.")] = 1.0,
    samples: Annotated[
        int | None,
        typer.Option(help="Training images per grid point (default: 2048, or the training set if smaller)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write landscape.png/.csv/.json (default: the run folder for one run, else .).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random directions and the image sample.")] = 0,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16 autocast (faster on CPUs with bf16).")
    ] = "fp32",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run grids of over 10,000 points (all runs) too.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Delete a landscape with other settings in --out and start over."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Loss landscape of trained runs along filter-normalized random directions (Li et al. 2018).

    Loss and error at w + alpha*d1 (+ beta*d2) on a fixed, seeded sample of training images (BN in eval
    mode); biases and BN parameters are not moved. Writes landscape.csv (a row per point, as each
    finishes), landscape.json (the settings) and landscape.png, and logs the figure to each run's
    TensorBoard (landscape/1d or landscape/2d). Ctrl-C keeps the finished points: run the same command
    again to continue.

    Example: cnnbench landscape RUN_A RUN_B --resolution 21 --samples 512 --out landscape
    """
    with user_errors():
        from cnnbench.diagnostics.landscape import landscape as run_landscape

        try:
            result = run_landscape(
                list(run_dirs),
                restart=restart,
                dims=dims,
                resolution=resolution,
                span=span,
                samples=samples,
                out=out,
                seed=seed,
                precision=precision,
                yes=yes,
                device=device,
            )
        except KeyboardInterrupt:
            print_error(
                "Aborted. The points finished so far are in landscape.csv; run the same command to continue."
            )
            raise typer.Exit(130) from None
        speed = f", {result.images_per_s:,.0f} img/s" if result.images_per_s else ""
        typer.echo(f"{result.done}/{result.total} points in {result.csv} ({result.seconds:.1f} s{speed}).")
        if not result.complete:
            print_error(
                f"Stopped after {result.done} of {result.total} points (kept in {result.csv}). Run the same "
                "command to continue."
            )
            raise typer.Exit(130)
        typer.echo(f"Wrote {result.png}.")


@app.command()
def status(
    paths: Annotated[list[Path], typer.Argument(help="Run folders or sweep folders.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON (for scripts).")] = False,
) -> None:
    """Every job of a run or sweep folder: state, iteration, attempts, last error, elapsed time and ETA.

    Reads metrics.json and the saved configs only (no model, no torch) and writes nothing. A job whose
    metrics.json says running but has not been updated for max(10 min, 3 evaluation intervals) shows as
    running? (its process was probably killed). Jobs of a sweep that never started are listed too.
    Exit code 0, or 2 when a PATH is neither a run nor a sweep (the others are still shown).

    Example: cnnbench status outputs/multirun/2026-11-23_14-12-03_123456
    """

    from cnnbench.commands.status import status_command

    raise typer.Exit(status_command(list(paths), as_json))


data_app = typer.Typer(
    help="Fetch cifar10, cifar100 and svhn ahead of a sweep, and check what is on disk.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
DataNamesArg = Annotated[list[str], typer.Argument(help="cifar10, cifar100 and/or svhn.", show_default=False)]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        "--root", help="Data root (default: $CNNBENCH_DATA or ~/.cache/cnnbench/data).", show_default=False
    ),
]


@data_app.command("download")
def data_download(
    names: DataNamesArg,
    root: DataRootOpt = None,
    extra: Annotated[bool, typer.Option("--extra", help="SVHN: extra_32x32.mat too.")] = False,
) -> None:
    """Download and check each dataset into the data root, once even if jobs run at the same time.

    Mirrors: CNNBENCH_CIFAR10_URL / _MD5, CNNBENCH_CIFAR100_URL / _MD5, CNNBENCH_SVHN_URL (a URL,
    file:// URL or local path). Example: cnnbench data download cifar10 --root /shared/data
    """
    from cnnbench.commands import data as datacmd

    with user_errors():
        for name, where in datacmd.download(names, root, extra=extra):
            typer.echo(f"{name}: ready in {where}")


@data_app.command("verify")
def data_verify(names: DataNamesArg, root: DataRootOpt = None) -> None:
    """Check every file against its published MD5 (offline); exit 1 if any is missing or bad."""
    from cnnbench.commands import data as datacmd

    with user_errors():
        results = datacmd.verify(names, root)
    bad = 0
    for name, checks in results:
        problems = [c for c in checks if c.state != "ok"]
        bad += len(problems)
        ok = len(checks) - len(problems)
        typer.echo(f"{name}: {ok} file(s) ok" + (f", {len(problems)} missing or bad:" if problems else ""))
        for check in problems:
            typer.echo(f"  {check.state}: {check.relpath} ({check.detail})")
    if bad:
        again = " ".join(n for n, _ in results) + (f" --root {root}" if root else "")
        print_error(
            f"{bad} file(s) missing or bad (listed above). Delete them (for CIFAR, the whole folder) and run "
            f"`cnnbench data download {again}` to fetch them again."
        )
        raise typer.Exit(1)


@data_app.command("list")
def data_list(root: DataRootOpt = None) -> None:
    """What is in the data root: each dataset's folder, files and archive, with sizes (offline)."""
    from cnnbench.commands import data as datacmd

    with user_errors():
        base, found = datacmd.listing(root)
    typer.echo(f"Data root: {base}")
    if not found:
        typer.echo(datacmd.empty_root_hint(base))
        return
    for name, path, size in found:
        typer.echo(f"  {name:<9} {datacmd.human(size):>9}  {path}")


def main() -> None:
    # torchrun and `python -m cnnbench` enter here too.
    app()


if __name__ == "__main__":
    main()
