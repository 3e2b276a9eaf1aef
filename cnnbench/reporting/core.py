"""make_report: run folders -> report.png, report.md, report.csv (+ a terminal table)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.reporting.runs import RunRecord, read_record
from cnnbench.reporting.summary import Row, build_rows, duplicate_seed_warnings
from cnnbench.rundir.files import discard, write_error
from cnnbench.rundir.find import find_runs


@dataclass
class ReportResult:
    """What ``make_report`` read and wrote."""

    out: Path
    png: Path
    md: Path
    csv: Path
    rows: list[Row]  # one per (configuration, status), in Figure 6 order
    runs: list[RunRecord]
    warnings: list[str] = field(default_factory=list)

    @property
    def table(self):
        """The report as a ``rich.table.Table``."""
        from cnnbench.reporting.tables import rich_table

        return rich_table(self.rows)


def _default_out(paths: Sequence[Path]) -> Path:
    if len(paths) == 1:
        only = Path(paths[0])
        return only.parent if only.is_file() else only
    return Path("report")


def read_records(run_dirs: list[Path]) -> tuple[list[RunRecord], list[str]]:
    runs, warnings = [], []
    for run_dir in run_dirs:
        try:
            runs.append(read_record(run_dir))
        except ValueError as exc:
            # A job may be rewriting its metrics.json right now: skip it, say so, keep the rest.
            warnings.append(f"Skipped {run_dir}: {exc}.")
    return runs, warnings


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise CnnbenchError(
            f"Cannot write the report into {out}: it is a file, not a folder. Pass --out with a folder."
        ) from exc
    except OSError as exc:
        raise CnnbenchError(
            f"Cannot create the report folder {out} ({exc.strerror}). Pass --out with a writable folder."
        ) from exc


@dataclass
class ComputedReport:
    """What a report shows, computed once: the runs read, Figure 6's rows, the warnings and the figure.
    ``write_report`` writes exactly this; the Python API returns it without writing."""

    paths: list[Path]  # as given
    runs: list[RunRecord]
    rows: list[Row]  # one per (configuration, status), in Figure 6 order
    warnings: list[str]
    figure: Any  # matplotlib Figure


def compute_report(paths: Sequence[Path]) -> ComputedReport:
    """Read every run folder under ``paths`` and compute the report.

    ``paths`` may be run folders, Hydra sweep folders or folders holding several sweeps
    (``cnnbench.rundir.find``); a run that never wrote metrics.json is named in the warnings. Runs that
    differ only by seed and trainer/device settings form one configuration (data, augment, model, depth,
    optimizer and schedule must match, and so must ``trainer.max_iters`` and ``trainer.batch_size``: a
    different budget is a different experiment). Each configuration gets one row per status, so
    unfinished, diverged or failed seeds are shown but never averaged with completed ones.

    Raises ``CnnbenchError`` when no readable run is found.
    """
    from cnnbench.reporting.plot import report_figure

    paths = [Path(p) for p in paths]
    runs, warnings = read_records(find_runs(paths, "report"))
    if not runs:
        raise CnnbenchError(
            f"No readable runs under {', '.join(map(str, paths))}: "
            + " ".join(warnings)
            + " Check that the trainer finished writing metrics.json (valid JSON) and run the report again."
        )
    rows = build_rows(runs)
    warnings += duplicate_seed_warnings(rows)
    figure = report_figure(rows, warnings)  # before the table: it may add warnings the table shows
    return ComputedReport(paths=paths, runs=runs, rows=rows, warnings=warnings, figure=figure)


def write_report(report: ComputedReport, out: Path | None = None) -> ReportResult:
    """Write ``report.png``, ``report.md`` and ``report.csv`` of a computed report into ``out`` (created
    if missing; default: the given folder when exactly one path was given, else ``./report``). Raises
    ``CnnbenchError`` when ``out`` cannot be written."""
    from cnnbench.reporting.diagnostics import diagnostics_markdown
    from cnnbench.reporting.tables import markdown, write_csv

    rows, paths, warnings = report.rows, report.paths, report.warnings
    out = Path(out) if out is not None else _default_out(paths)
    _prepare_out(out)
    png, md, csv_path = out / "report.png", out / "report.md", out / "report.csv"
    # Figures that `cnnbench analyze` / `landscape` already wrote here or in the runs are linked.
    figures = diagnostics_markdown([out, *paths, *(run.path for run in report.runs)], out)
    text = markdown(rows, paths, png.name, warnings) + figures
    _write_all(
        out,
        [
            (csv_path, lambda tmp: write_csv(rows, tmp)),
            (md, lambda tmp: tmp.write_text(text, encoding="utf-8")),
            (png, lambda tmp: report.figure.savefig(tmp, format="png")),
        ],
    )
    return ReportResult(out=out, png=png, md=md, csv=csv_path, rows=rows, runs=report.runs, warnings=warnings)


def make_report(paths: Sequence[Path], out: Path | None = None) -> ReportResult:
    """`cnnbench report PATHS --out OUT`: compute the report and write its three files."""
    return write_report(compute_report(paths), out)


def _write_all(out: Path, files: list[tuple[Path, Callable[[Path], object]]]) -> None:
    """Each file under a temporary name first, then all renamed into place: a full disk leaves no file
    half-written and an earlier report whole. A file that cannot be written is the one-paragraph error:
    ``NotWritten`` (exit 75) when there is no room, exit 2 when the folder is not writable."""
    temporary = [(path, path.with_name(f".{path.name}.{os.getpid()}.tmp")) for path, _ in files]
    try:
        for (path, write), (_, tmp) in zip(files, temporary, strict=True):
            try:
                write(tmp)
            except OSError as exc:
                raise write_error(
                    path,
                    exc,
                    "No report file was written (an earlier report there is as it was).",
                    "Pass --out with a writable folder.",
                ) from None
        for path, tmp in temporary:
            os.replace(tmp, path)
    finally:
        for _, tmp in temporary:
            discard(tmp)


def print_report(result: ReportResult, console=None) -> None:
    """Print the table, the files written and any warnings on a ``rich.console.Console``."""
    from rich.console import Console

    console = console or Console()
    console.print(result.table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    console.print(f"Wrote {result.png}, {result.md} and {result.csv}.", highlight=False)


# Where sweeps are when no folder is given: hydra.sweep.dir's default (conf/config.yaml), from here.
SWEEPS_ROOT = Path("outputs") / "multirun"


def latest_sweep_or_refuse() -> Path:
    """The latest sweep under ``outputs/multirun`` of the working folder, or the one-paragraph refusal."""
    from cnnbench.rundir.find import latest_sweep

    sweep = latest_sweep(SWEEPS_ROOT)
    if sweep is None:
        raise CnnbenchError(
            f"No sweep under {SWEEPS_ROOT} (of {Path.cwd()}), where `cnnbench train -m` puts them. Give "
            f"`cnnbench report` a folder: a run, a sweep or a folder holding several, e.g. `cnnbench report "
            f"outputs/multirun/<stamp>` or `cnnbench report outputs/resnet56/<stamp>`."
        )
    return sweep


def report_command(paths: Sequence[Path], out: Path | None = None) -> int:
    """`cnnbench report`: write the report and print its table, the files and the warnings; without
    ``paths``, of the latest sweep (named first). Piped into a file or a CI log the table is 160 columns
    wide (rich would wrap it at 80)."""
    import sys

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    if not paths:
        paths = [latest_sweep_or_refuse()]
        console.print(f"Reporting the latest sweep, {paths[0]} (give a folder for another).", highlight=False)
    print_report(make_report(paths, out), console)
    return 0
