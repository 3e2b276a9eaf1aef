"""What the commands that read runs compute, returned as objects: ``report``, ``runs``, ``analyze`` and
``landscape`` (rows as a pandas DataFrame when pandas is installed, figures as matplotlib Figures)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.api.handles import Run, RunsLike, Sweep, given_items, run_folders
from cnnbench.api.launching import rng_kept

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _table(records: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame when pandas is installed, else the list of dicts itself."""
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame(records)


def _figure(figure: Figure) -> Figure:
    from cnnbench.rundir.notebook import show_figures_inline

    show_figures_inline()
    return figure


@dataclass
class Report:
    """What ``cnnbench report`` computes, for a notebook: ``rows`` (a pandas DataFrame when pandas is
    installed, else a list of dicts, the columns of report.csv) and ``figure`` (Figure 6, matplotlib)."""

    rows: Any
    figure: Figure
    warnings: list[str]
    _computed: Any  # reporting.core.ComputedReport

    def save(self, folder: str | Path) -> Path:
        """Write report.png, report.md and report.csv of this report into ``folder`` (as `cnnbench
        report --out`)."""
        from cnnbench.reporting.core import write_report

        return write_report(self._computed, Path(folder)).out


def report(runs: RunsLike) -> Report:
    """The numbers and Figure 6 of ``cnnbench report`` for runs, sweeps or folders, without writing
    files (``Report.save(folder)`` writes them)."""
    from cnnbench.reporting.core import compute_report
    from cnnbench.reporting.tables import csv_record

    # Folders as given (report finds the runs below them, as `cnnbench report` does).
    paths = [item.path if isinstance(item, (Run, Sweep)) else Path(item) for item in given_items(runs)]
    computed = compute_report(paths)
    table = _table([csv_record(row) for row in computed.rows])
    return Report(table, _figure(computed.figure), computed.warnings, computed)


def runs(*filters: str, folder: str | Path = "outputs", **where: Any) -> Any:
    """Every run under ``folder`` as `cnnbench runs` lists it (identity, model, depth, seed, data,
    numerics, max_iters, status, errors, folder...): a pandas DataFrame, else a list of dicts. Filters as
    ``"model=resnet"`` or ``model="resnet"`` (``optimizer__lr=0.1`` for a config key). Its ``folder``
    column goes to ``report``: ``cnnbench.report(cnnbench.runs(model="resnet").folder)``."""
    from cnnbench.commands.runs_table import collect, public

    given = [*filters, *(f"{key.replace('__', '.')}={value}" for key, value in where.items())]
    return _table([public(record) for record in collect(Path(folder), given)])


@dataclass
class Analysis:
    """What ``cnnbench analyze`` computes: ``rows`` (per run and 3x3 layer: response std, gradient norm;
    the columns of analysis.csv) and ``figure`` (He et al. 2016 Figure 7 and the gradient norms)."""

    rows: Any
    figure: Figure
    _analyses: list

    def save(self, folder: str | Path) -> Path:
        """Write analysis.png and analysis.csv into ``folder`` (as `cnnbench analyze --out`)."""
        from cnnbench.diagnostics.responses import write_analysis

        return write_analysis(self._analyses, Path(folder)).out


def analyze(
    runs: RunsLike, samples: int | None = None, at_init: bool = False, device: str = "auto"
) -> Analysis:
    """Layer responses (Figure 7) and per-layer gradient norms of trained runs, as ``cnnbench analyze``,
    without writing files (``Analysis.save(folder)`` writes them). ``runs``: runs, sweeps or folders;
    ``samples``: test images for the response std; ``at_init``: also the gradients at initialization."""
    from cnnbench.diagnostics.figures import analysis_figure
    from cnnbench.diagnostics.responses import analysis_rows, analyze_runs

    with rng_kept():
        analyses = analyze_runs(run_folders(runs), samples, at_init, device)
    return Analysis(_table(analysis_rows(analyses)), _figure(analysis_figure(analyses)), analyses)


@dataclass
class Landscape:
    """A loss landscape (``cnnbench landscape``): ``rows`` (per run and grid point: alpha, beta, loss,
    error), ``figure`` (None until every point is done), ``out`` (the folder of landscape.csv/.json/.png)."""

    rows: Any
    figure: Figure | None
    out: Path
    done: int
    total: int

    @property
    def complete(self) -> bool:
        return self.done >= self.total


def landscape(
    runs: RunsLike,
    dims: int = 1,
    resolution: int = 51,
    span: float = 1.0,
    samples: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    precision: str = "fp32",
    yes: bool = False,
    restart: bool = False,
    device: str = "auto",
) -> Landscape:
    """The loss along filter-normalized random directions (Li et al. 2018), as ``cnnbench landscape``
    with the same options. It writes landscape.csv (a row per point, as each finishes: the same call
    continues an interrupted landscape), landscape.json and landscape.png into ``out`` (default: the run
    folder for one run, else the working directory) and logs the figure to each run's TensorBoard."""
    import sys

    from rich.console import Console

    from cnnbench.diagnostics.figures import landscape_figure
    from cnnbench.diagnostics.landscape import landscape as run_landscape
    from cnnbench.diagnostics.landscape import read_points

    with rng_kept():
        result = run_landscape(
            run_folders(runs),
            restart=restart,
            # Plain lines, also in a notebook (rich's live display there needs ipywidgets).
            console=Console(file=sys.stderr, force_jupyter=False, force_terminal=False),
            dims=dims,
            resolution=resolution,
            span=span,
            samples=samples,
            out=None if out is None else Path(out),
            seed=seed,
            precision=precision,
            yes=yes,
            device=device,
        )
    figure = _figure(landscape_figure(result.surfaces, result.settings)) if result.surfaces else None
    return Landscape(_table(read_points(result.csv)), figure, result.out, result.done, result.total)
