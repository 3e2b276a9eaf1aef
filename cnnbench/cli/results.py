"""`cnnbench report`, `eval`, `export`, `status` and `models`: the commands that read run folders (and the
model zoo) and show or write what is in them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli.app import DeviceOpt, FoldersArg, JsonOpt, app, run
from cnnbench.commands.choices import EvalPrecision, ExportFormat, Split, Tta, WeightsChoice


@app.command()
def report(
    directories: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folders or sweep folders (default: the latest sweep under outputs/multirun).",
            show_default=False,
        ),
    ] = None,
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

    Without a folder: the latest sweep under outputs/multirun (a sweep writes its own report when it ends).

    Example: cnnbench report outputs/multirun/2026-11-23_14-12-03_123456
    """
    from cnnbench.reporting.core import report_command

    run(lambda: report_command(list(directories or []), out))


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
    from cnnbench.commands.models import models_command

    run(lambda: models_command(depths, model, flops))


@app.command(name="eval")
def eval_(
    directories: FoldersArg,
    split: Annotated[Split, typer.Option(help="val needs a run with data.val_size.")] = Split.test,
    weights: Annotated[
        WeightsChoice,
        typer.Option(
            help="last (checkpoint.pt), best (best.pt: best validation error) or ema (the weights' "
            "moving average, trainer.ema_decay)."
        ),
    ] = WeightsChoice.last,
    tta: Annotated[
        Tta, typer.Option(help="flip: average the softmax of each image and its mirror.")
    ] = Tta.none,
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
        EvalPrecision,
        typer.Option(
            help="run: the precision and memory layout the run's own evaluations used (what its "
            "trainer.precision=auto resolved to), so the numbers match its logged test error; or fp32, bf16, "
            "fp16 (autocast, in the run's memory layout)."
        ),
    ] = EvalPrecision.run,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
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
    from cnnbench.commands.eval_display import eval_command
    from cnnbench.commands.eval_options import EvalOptions, parse_data_overrides

    def body() -> int:
        options = EvalOptions(
            split=split.value,
            weights=weights.value,
            tta=tta.value,
            data=parse_data_overrides(data or []),
            precision=precision.value,
            device=device,
        )
        return eval_command(list(directories), options, as_json)

    run(body)


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="A run folder.", show_default=False)],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help='onnx needs pip install "cnnbench\\[onnx]".')
    ] = ExportFormat.torchscript,
    weights: Annotated[
        WeightsChoice, typer.Option(help="last (checkpoint.pt), best (best.pt) or ema.")
    ] = WeightsChoice.last,
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
    `pip install "cnnbench\\[onnx]"`.

    Example: cnnbench export outputs/resnet56/2026-11-23_14-12-03_123456 --weights best

    Then, in plain PyTorch: model = torch.jit.load("model.ts.pt"); logits = model(uint8_images.float() / 255)
    """
    from cnnbench.commands.export import export_command

    run(lambda: export_command(directory, fmt=fmt.value, weights=weights.value, out=out, force=force))


@app.command()
def status(paths: FoldersArg, as_json: JsonOpt = False) -> None:
    """Every job of a run or sweep folder: state, iteration, attempts, last error, elapsed time and ETA.

    Reads metrics.json and the saved configs only (no model, no torch) and writes nothing. A job whose
    metrics.json says running but has not been updated for max(10 min, 3 evaluation intervals) shows as
    running? (its process was probably killed). Jobs of a sweep that never started are listed too.
    Exit code 0, or 2 when a PATH is neither a run nor a sweep (the others are still shown).

    Example: cnnbench status outputs/multirun/2026-11-23_14-12-03_123456
    """
    from cnnbench.commands.status import status_command

    run(lambda: status_command(list(paths), as_json))


@app.command(name="runs")
def runs_(
    folder: Annotated[
        Path | None,
        typer.Argument(help="An outputs folder, a sweep or a run (default: outputs).", show_default=False),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Argument(
            help="KEY=VALUE filters, all must hold; KEY=a,b: any of the values. KEY: a column (identity, "
            "model, depth, seed, data, numerics, max_iters, status, experiment, reused) or a config key "
            "(optimizer.lr).",
            show_default=False,
        ),
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    as_json: JsonOpt = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Write `cnnbench report` of the matching runs (one per identity; mean ± std over seeds).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="With --report: where to write it (default: ./report).")
    ] = None,
) -> None:
    """Every run under an outputs folder, whichever sweep trained it: identity, model, depth, seed, data,
    numerics, max_iters, status, final errors and folder. Reads small files only; writes nothing (but the
    folder's identity index when it has none).

    Examples:

      cnnbench runs model=resnet status=completed

      cnnbench runs outputs experiment=degradation --csv > runs.csv

      cnnbench runs model=plain,resnet depth=20,56 status=completed --report
    """
    from cnnbench.commands.runs_table import runs_command

    # A first argument with `=` is a filter: the folder then defaults to outputs.
    given = [str(folder)] if folder is not None else []
    if given and "=" in given[0] and not Path(given[0]).exists():
        filters, folder = [given[0], *(filters or [])], None
    run(lambda: runs_command(folder, filters or [], as_csv=as_csv, as_json=as_json, report=report, out=out))
