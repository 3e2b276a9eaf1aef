"""`cnnbench status PATH...`: the table (or JSON) of every job of run and sweep folders, and its exit
code. What each job's state is, and how it is read, is ``commands/status_jobs.py``."""

from __future__ import annotations

import json
from pathlib import Path

from cnnbench.commands.status_jobs import (
    MESSAGE_WIDTH,
    NOT_STARTED,
    STALE,
    UNREADABLE,
    FolderStatus,
    Job,
    format_duration,
)
from cnnbench.commands.status_sweeps import folder_status
from cnnbench.errors import CnnbenchError

__all__ = ["folder_status", "status_command"]


# ----- showing --------------------------------------------------------------------------------------
def one_line(text: str | None, width: int = MESSAGE_WIDTH) -> str:
    if not text:
        return ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= width and len(lines) <= 1 else line[: width - 1].rstrip() + "…"


STATE_STYLE = {
    "completed": ("completed", "green"),
    "running": ("running", "cyan"),
    STALE: ("running?", "yellow"),
    "interrupted": ("interrupted", "yellow"),
    "diverged": ("diverged", "red"),
    "failed": ("failed", "red"),
    NOT_STARTED: ("not started", "dim"),
    UNREADABLE: ("unreadable", "red"),
}


def progress_text(job: Job) -> str:
    if job.iteration is None:
        return f"- / {job.max_iters:,}" if job.max_iters else ""
    if not job.max_iters:
        return f"{job.iteration:,} / ?"
    return f"{job.iteration:,} / {job.max_iters:,} ({job.percent:.0f}%)"


def status_table(status: FolderStatus):
    """The folder's jobs as a ``rich.table.Table``."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{status.kind} {status.path}", title_justify="left")
    for column, justify in (
        ("job", "left"),
        ("state", "left"),
        ("iteration", "right"),
        ("attempts", "right"),
        ("elapsed", "right"),
        ("ETA", "right"),
        ("message", "left"),
    ):
        # Everything on one line but the message (already cut to one line): on a narrow terminal it wraps.
        table.add_column(column, justify=justify, no_wrap=column != "message")
    for job in status.jobs:
        label, style = STATE_STYLE.get(job.state, (job.state, ""))
        table.add_row(
            Text(job.job),
            Text(label, style=style),
            progress_text(job),
            str(job.attempts) if job.attempts else "",
            format_duration(job.elapsed_seconds),
            format_duration(job.eta_seconds),
            Text(one_line(job.message)),
        )
    return table


def summary_lines(status: FolderStatus) -> list[str]:
    """The counts per state and the iterations, then the notes and what to do next."""
    counts = status.counts()
    done, total = status.iterations()
    of = (
        f" of {status.expected_jobs} expected" if status.expected_jobs not in (None, len(status.jobs)) else ""
    )
    states = ", ".join(f"{n} {STATE_STYLE[s][0]}" for s, n in counts.items())
    progress = (
        f"{done:,} / {total:,} iterations ({100 * done / total:.0f}%)" if total else f"{done:,} iterations"
    )
    head = f"{len(status.jobs)} job(s){of}: {states}; {progress}."
    if status.jobs and counts.get("completed") == len(status.jobs):
        head += " All completed."
    return [head, *status.notes, *status.next_steps()]


def print_status(status: FolderStatus, console) -> None:
    console.print(status_table(status))
    for line in summary_lines(status):
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # commands stay copyable


def status_command(paths: list[Path], as_json: bool) -> int:
    """`cnnbench status`: print every folder's jobs (or JSON); 2 when a path is neither a run nor a sweep
    (the others are still shown)."""
    import sys

    from rich.console import Console

    from cnnbench.errors import print_error

    console = Console(width=None if sys.stdout.isatty() else 160)
    results, bad = [], 0
    for path in paths:
        try:
            result = folder_status(path)
        except CnnbenchError as exc:
            print_error(str(exc))
            bad += 1
            continue
        results.append(result)
        if not as_json:
            print_status(result, console)
    if as_json and results:
        print(json.dumps([r.record() for r in results], indent=2))
    return 2 if bad else 0
