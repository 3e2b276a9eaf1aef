"""cnnbench from Python (a notebook, a script): train, sweep, open run folders, report.

The same code path as the command line: ``train`` and ``sweep`` launch the same Hydra app through
``commands.launch`` with the same overrides, so the composition, validation, fast path, run folder and
records are those of ``cnnbench train``. Refusals raise ``CnnbenchError`` with the message the CLI
prints; the interpreter lives on (Hydra's global state cleared, the working directory and the logging
set-up as they were).

    import cnnbench
    run = cnnbench.train("model=resnet", "depth=20", "data=digits", "trainer.max_iters=300")
    run.status, run.metrics["test_error"], run.model()
    sweep = cnnbench.sweep("model=plain,resnet", "depth=20,56", "data=digits", "trainer.max_iters=300")
    cnnbench.report(sweep).figure            # Figure 6; .rows: Table 6
    cnnbench.analyze(sweep).figure           # Figure 7: layer responses, gradient norms per layer
    cnnbench.landscape(sweep[2:], resolution=21).figure  # the 56s: the loss along a random direction

In a notebook, training shows one progress bar per run, updated in place, and the figures display inline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.core.overrides import hydra_value
from cnnbench.errors import CnnbenchError, collected_errors
from cnnbench.runs.files import CHECKPOINT_NAME, METRICS_NAME, MULTIRUN_RECORD, SAVED_CONFIG, read_metrics
from cnnbench.runs.find import is_run, is_sweep, runs_under

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from omegaconf import DictConfig

CURVE_TAGS = ("error/train", "error/test", "loss/train", "loss/test", "lr")


@dataclass(frozen=True)
class Run:
    """One run folder (made by ``train``, a sweep, or the CLI). Reads its files; never changes them."""

    path: Path

    @property
    def config(self) -> DictConfig:
        """The composed config the run trained with (``.hydra/config.yaml``)."""
        from omegaconf import OmegaConf

        return OmegaConf.load(self.path / SAVED_CONFIG)

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: status, iteration, final errors and losses (fractions), params, attempts."""
        return read_metrics(self.path) or {}

    @property
    def status(self) -> str | None:
        """``running``, ``completed``, ``interrupted``, ``diverged`` or ``failed`` (None: never started)."""
        return self.metrics.get("status")

    def history(self, tags: Iterable[str] = CURVE_TAGS) -> dict[str, list[tuple[int, float]]]:
        """The logged scalars per TensorBoard tag, as (iteration, value) pairs. A tag ending in ``/``
        stands for all under it: ``run.history(["grad_norm/stage/"])`` is the gradient flow per stage."""
        from cnnbench.reporting.runs import read_curves

        return {
            tag: [(int(s), float(v)) for s, v in zip(curve.steps, curve.values, strict=True)]
            for tag, curve in read_curves(self.path, tuple(tags)).items()
        }

    def model(self, device: str = "cpu", weights: str = "last") -> torch.nn.Module:
        """The trained network (eval mode) on ``device``; ``weights``: last, best (best.pt) or ema."""
        from cnnbench.commands.trained_model import trained_model

        return trained_model(self.path, device=device, weights=weights)

    def __repr__(self) -> str:
        m = self.metrics
        error = m.get("test_error")
        shown = f", test_error={error:.4f}" if isinstance(error, float) else ""
        return f"Run('{self.path}', status={m.get('status')!r}, iteration={m.get('iteration')}{shown})"


@dataclass(frozen=True)
class Sweep:
    """A multirun folder; iterating gives its runs (its job folders, nested or not), in folder order."""

    path: Path

    @property
    def runs(self) -> list[Run]:
        return [Run(p) for p in runs_under(self.path)]

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int | slice) -> Run | list[Run]:
        """Runs in folder order (depth=20,model=plain < depth=20,model=resnet < depth=56,...)."""
        return self.runs[index]

    def __repr__(self) -> str:
        return f"Sweep('{self.path}', runs={len(self)})"


def _table(records: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame when pandas is installed, else the list of dicts itself."""
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame(records)


def _figure(figure: Figure) -> Figure:
    from cnnbench.runs.notebook import show_figures_inline

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


def _overrides(overrides: tuple[str, ...], options: dict[str, Any]) -> list[str]:
    """Positional overrides as typed, then keyword ones: ``depth=56``, ``trainer__max_iters=300``."""
    given = list(overrides)
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        given.append(f"{key.replace('__', '.')}={text}")
    bad = [o for o in given if not isinstance(o, str) or o.startswith("-")]
    if bad:
        raise CnnbenchError(
            f"{', '.join(map(str, bad))}: cnnbench.train/sweep take Hydra overrides (key=value strings, e.g. "
            f'"depth=56"), not command-line flags; use cnnbench.sweep for a multirun.'
        )
    return given


@contextmanager
def _rng_kept() -> Iterator[None]:
    """The caller's global RNGs (python, numpy, torch) as they were, afterwards: training and the
    diagnostics seed them with the run's seed, a notebook's own random draws should not notice."""
    import random

    import numpy
    import torch

    python_state, numpy_state = random.getstate(), numpy.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            numpy.random.set_state(numpy_state)


@contextmanager
def _kernel_kept() -> Iterator[None]:
    """The caller's working directory, logging set-up, RNGs and Hydra state as they were, afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    cwd = os.getcwd()
    root = logging.getLogger()
    saved_root = (root.level, root.handlers[:])
    saved = {
        name: (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        with _rng_kept():
            yield
    finally:
        GlobalHydra.instance().clear()
        os.chdir(cwd)
        for handler in root.handlers[:]:
            if handler not in saved_root[1]:
                handler.close()  # train.log: Hydra's file handler for the run that ended
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and name in saved:
                lg.level, lg.handlers[:], lg.propagate, lg.disabled = saved[name]


def _launch(body: Callable[[], int]) -> tuple[int, dict[str, Path]]:
    """Run a command's body (``commands.train.train``, ``commands.resume.resume``) as the CLI does; a
    refusal raises ``CnnbenchError`` with the CLI's message."""
    from cnnbench.commands import app

    app.last_launch.clear()
    with _kernel_kept(), collected_errors() as errors:
        try:
            code = body()
        except CnnbenchError as exc:
            errors.append(str(exc))
            code = exc.exit_code
        except SystemExit as stop:  # a run stopped by a signal (Ctrl-C in a cell): marked interrupted
            code = stop.code if isinstance(stop.code, int) else 1
    where = dict(app.last_launch)
    if errors and not _stopped_run(code, where):
        raise CnnbenchError("\n".join(errors), exit_code=code or 2)
    return code, where


def _stopped_run(code: int, where: dict[str, Path]) -> bool:
    """A run a signal stopped (exit 128 + n) and marked interrupted: returned, not raised. A refusal of a
    folder whose metrics say interrupted (say, another process holds it) is still raised."""
    run_dir = where.get("run_dir")
    stopped = code > 128 and run_dir is not None
    return stopped and (read_metrics(run_dir) or {}).get("status") == "interrupted"


def train(*overrides: str, run_dir: str | Path | None = None, **options: Any) -> Run:
    """Train one run, exactly as ``cnnbench train OVERRIDES...`` does, and return it when it ends.

    ``overrides`` are Hydra overrides as on the command line (``"model=resnet"``, ``"depth=20"``);
    keyword options are overrides too, with ``__`` for the dots (``trainer__max_iters=300``).
    ``run_dir``: the run folder (default: ``outputs/<model><depth>/<stamp>``, as the CLI). Calling
    ``train`` again with the same ``run_dir`` continues an interrupted run or returns the completed one
    (``trainer.resume=auto``).

    Returns a ``Run`` whose ``status`` says how it ended: ``completed``, ``diverged``, or ``interrupted``
    (Ctrl-C / the notebook's interrupt: the checkpoint is kept, the same call continues it).
    Raises ``CnnbenchError`` (the CLI's one-paragraph message) for bad overrides or a refused folder;
    nothing is written then.
    """
    from cnnbench.commands.train import train as train_body

    args = _overrides(overrides, options)
    if run_dir is not None:
        args.append(f"hydra.run.dir={hydra_value(str(Path(run_dir)))}")
    _, where = _launch(lambda: train_body(args))
    if "run_dir" not in where:
        raise CnnbenchError("The run did not start (no run folder was chosen); see the log above.")
    return Run(where["run_dir"])


def sweep(*overrides: str, sweep_dir: str | Path | None = None, **options: Any) -> Sweep:
    """A Hydra multirun, exactly as ``cnnbench train -m OVERRIDES...`` (any launcher, e.g.
    ``"hydra/launcher=joblib"``): every job's config is checked before any starts. Returns the ``Sweep``
    when all jobs have ended; ``sweep_dir`` as ``hydra.sweep.dir`` (default ``outputs/multirun/<stamp>``).

    The same call with the same ``sweep_dir`` again (a notebook cell run twice, or after the kernel's
    stop button) continues the sweep as ``cnnbench resume SWEEP_DIR`` does: finished jobs are returned
    as they are, interrupted ones continue, unstarted ones start. Other overrides into that folder are
    refused (``CnnbenchError``), nothing changed."""
    from cnnbench.commands.train import train as train_body

    args = _overrides(overrides, options)
    if sweep_dir is not None and is_sweep(Path(sweep_dir)):
        return _continue_sweep(Path(sweep_dir), args)
    if sweep_dir is not None:
        args.append(f"hydra.sweep.dir={hydra_value(str(Path(sweep_dir)))}")
    _, where = _launch(lambda: train_body(args, multirun=True))
    if "sweep_dir" not in where:
        raise CnnbenchError("The sweep did not start (no sweep folder was chosen); see the log above.")
    return Sweep(where["sweep_dir"])


def _continue_sweep(sweep_dir: Path, args: list[str]) -> Sweep:
    """``sweep_dir`` holds a sweep: continue it if ``args`` are its own task overrides, else refuse."""
    from omegaconf import OmegaConf

    from cnnbench.commands.train import resume

    recorded = OmegaConf.to_container(OmegaConf.load(sweep_dir / MULTIRUN_RECORD).hydra.overrides.task)
    given = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    if sorted(given) != sorted(recorded):
        raise CnnbenchError(
            f"{sweep_dir} holds a sweep of other overrides ({' '.join(recorded)}), not of these "
            f"({' '.join(given)}); cnnbench never overwrites results. Give the same overrides to continue "
            f"it, or another sweep_dir for a new sweep. Nothing was changed."
        )
    _launch(lambda: resume(sweep_dir))
    return Sweep(sweep_dir)


# What report, analyze and landscape take: runs, sweeps or folders, alone or several.
RunsLike = Run | Sweep | str | Path | Iterable[Run | Sweep | str | Path]


def load(path: str | Path) -> Run | Sweep:
    """Open a run folder or a sweep (multirun) folder, also one the CLI made."""
    folder = Path(path)
    if is_sweep(folder):
        return Sweep(folder)
    if is_run(folder):
        return Run(folder)
    raise CnnbenchError(
        f"{folder} is neither a run folder (with {METRICS_NAME}, {CHECKPOINT_NAME} or {SAVED_CONFIG}) nor a "
        f"sweep folder (with {MULTIRUN_RECORD}). Give cnnbench.load a folder under outputs/ that "
        f"`cnnbench status` lists."
    )


def report(runs: RunsLike) -> Report:
    """The numbers and Figure 6 of ``cnnbench report`` for runs, sweeps or folders, without writing
    files (``Report.save(folder)`` writes them)."""
    from cnnbench.reporting.core import compute_report
    from cnnbench.reporting.tables import csv_record

    # Folders as given (report finds the runs below them, as `cnnbench report` does).
    paths = [item.path if isinstance(item, (Run, Sweep)) else Path(item) for item in _items(runs)]
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


def _items(runs: RunsLike) -> list[Run | Sweep | str | Path]:
    return [runs] if isinstance(runs, (Run, Sweep, str, Path)) else list(runs)


def _run_folders(runs: RunsLike) -> list[Path]:
    """Run folders, in the order given; a sweep (object or folder) stands for its runs."""
    folders: list[Path] = []
    for item in _items(runs):
        opened = load(item) if isinstance(item, (str, Path)) else item
        folders += [r.path for r in opened] if isinstance(opened, Sweep) else [opened.path]
    return folders


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

    with _rng_kept():
        analyses = analyze_runs(_run_folders(runs), samples, at_init, device)
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

    with _rng_kept():
        result = run_landscape(
            _run_folders(runs),
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
