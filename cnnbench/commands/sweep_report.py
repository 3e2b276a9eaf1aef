"""The report at the end of a sweep: report.png, report.md and report.csv in the sweep folder (written as
`cnnbench report SWEEP_DIR` writes them), then which jobs did not complete and what to run next.

``SweepReport`` is a Hydra callback (``hydra.callbacks.report`` in conf/config.yaml). Hydra calls
``on_multirun_end`` in the process that launched the sweep, whatever the launcher (basic, joblib,
submitit), once every job has returned; ``cnnbench train -m``, ``cnnbench resume SWEEP_DIR`` and
``cnnbench.sweep(...)`` all end there, so the report is brought up to date each time a sweep continues.
Hydra skips ``on_multirun_end`` when a job failed or diverged, or when a signal stopped the sweep:
``launch`` then calls ``report_unended_sweep`` on its way out, so those sweeps end with their report too.

Switch it off on the command line: ``cnnbench train -m ... hydra.callbacks.report.enabled=false`` (a
resumed sweep keeps the setting it was started with; `cnnbench report SWEEP_DIR` writes it any time).
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnbench.commands.status import folder_status
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import METRICS_NAME
from cnnbench.rundir.find import runs_under

# The sweep this process launched whose report is still to be written (set when the sweep starts).
_unended: dict[str, Path] = {}

# The states of `cnnbench status` (its jobs' ``state``) a job that did not complete is in, named as the
# closing lines name them, in this order.
NOT_COMPLETED = {
    "failed": "failed",
    "diverged": "diverged",
    "interrupted": "interrupted",
    "stale": "stopped without saving (running? in `cnnbench status`)",
    "not started": "missing (never started)",
    "running": "still running",
    "unreadable": "unreadable",
}
# States that `cnnbench resume` continues.
RESUMABLE = ("failed", "interrupted", "stale", "not started")


class SweepReport(Callback):
    """Write the sweep's report into its folder when the sweep ends (``enabled``: false to skip it, as
    ``hydra.callbacks.report.enabled=false`` on the command line)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _unended.clear()
        if self.enabled:
            _unended["sweep_dir"] = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report_unended_sweep()


def report_unended_sweep() -> None:
    """Write the report of the sweep this process launched, unless written already or switched off. After
    a second Ctrl-C (an abort) nothing is written: the user asked to leave at once."""
    sweep_dir = _unended.pop("sweep_dir", None)
    if sweep_dir is None or isinstance(sys.exc_info()[1], KeyboardInterrupt):
        return
    report_sweep(sweep_dir)


def report_sweep(sweep_dir: Path) -> None:
    """Write ``sweep_dir``'s report and print it, the jobs that did not complete and the next commands.
    Never raises: a report that cannot be written is one error paragraph, and the sweep's outcome stands.
    A sweep none of whose jobs trained (all refused) gets no report and no lines."""
    from cnnbench.reporting.core import make_report, print_report

    try:
        if not any((run / METRICS_NAME).is_file() for run in runs_under(sweep_dir)):
            return
        console = _console()
        try:
            with _quiet("tensorboard"):  # its event reader's INFO lines, on Hydra's sweep logging
                print_report(make_report([sweep_dir]), console)
        except CnnbenchError as error:
            _show_error(f"The sweep's report was not written: {error}")
        for line in closing_lines(sweep_dir):
            console.print(line, highlight=False, markup=False, soft_wrap=True)  # commands stay copyable
    except KeyboardInterrupt:
        _show_error(
            f"The sweep's report was not written (interrupted). Write it with `{_report(sweep_dir)}`."
        )
    except Exception as exc:  # a defect of the report must not fail a sweep whose jobs ended
        _show_error(
            f"The sweep's report was not written ({type(exc).__name__}: {str(exc).strip() or 'no message'}). "
            f"Try `{_report(sweep_dir)}`; if it fails the same way, this is a defect of cnnbench: please "
            f"report the command."
        )


def closing_lines(sweep_dir: Path) -> list[str]:
    """The jobs that did not complete, by state, then the commands to look further (and to resume)."""
    folder = shlex.quote(str(sweep_dir))
    try:
        jobs = folder_status(sweep_dir).jobs
    except CnnbenchError as error:
        lines, states = [f"The jobs' states could not be read: {error}"], set()
    else:
        states = {job.state for job in jobs}
        done = sum(job.state == "completed" for job in jobs)
        of = "all" if done == len(jobs) else f"{done} of"
        lines = [f"Sweep {sweep_dir}: {of} {len(jobs)} job(s) completed."]
        for state, label in NOT_COMPLETED.items():
            names = [job.job for job in jobs if job.state == state]
            if names:
                lines.append(f"  {label}: {', '.join(names)}")
    lines.append("Next:")
    if states & set(RESUMABLE):
        lines.append(f"  cnnbench resume {folder}    # continue the unfinished jobs")
    lines.append(f"  cnnbench status {folder}    # every job's state, iterations and last error")
    lines.append(f"  tensorboard --logdir {folder}    # the curves of every job")
    return lines


def _report(sweep_dir: Path) -> str:
    return f"cnnbench report {shlex.quote(str(sweep_dir))}"


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only the warnings of ``logger_name`` while inside."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _console():
    """As `cnnbench report` prints: piped into a file or a CI log, 160 columns wide."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _show_error(message: str) -> None:
    """``error: <message>`` on stderr as print_error shows it, also inside the Python API: there
    print_error's messages become the call's exception, and a report that could not be written must not
    turn a sweep that ended into one."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True
    )
