"""What ``cnnbench landscape`` shows: the time estimate, the progress bar, the figure (landscape.png and
each run's TensorBoard)."""

from __future__ import annotations

import time
from pathlib import Path

from cnnbench.diagnostics.landscape_files import PNG_NAME
from cnnbench.diagnostics.landscape_grid import PointEvaluator
from cnnbench.diagnostics.landscape_plan import Plan, Settings


def print_estimate(console, evaluator: PointEvaluator, passes: int, s: Settings) -> None:
    """Time one batch at the trained weights and extrapolate to every pass."""
    n = min(len(evaluator.labels), 256)
    evaluator((), limit=min(n, 32))  # warm-up
    started = time.perf_counter()
    evaluator((), limit=n)
    rate = n / max(time.perf_counter() - started, 1e-9)
    console.print(
        f"Estimate: ~{rate:,.0f} img/s here, so about {duration(passes * s.samples / rate)} in all.",
        highlight=False,
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points, ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def draw(plan_: Plan, data: list, tensorboard: bool) -> Path:
    from cnnbench.diagnostics.figures import landscape_figure, save_figure

    png = plan_.out / PNG_NAME
    save_figure(landscape_figure(data, plan_.settings), png)
    if tensorboard:
        for c, one in zip(plan_.runs, data, strict=True):
            log_figure(
                c.run.run_dir,
                f"landscape/{plan_.settings.dims}d",
                landscape_figure([one], plan_.settings),
                c.run.iteration,
            )
    return png


def log_figure(run_dir: Path, tag: str, figure, step: int) -> None:
    """Add ``figure`` to the run's TensorBoard, in an events file of its own (training's are untouched)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir), filename_suffix=".landscape")
    try:
        writer.add_figure(tag, figure, global_step=step, close=False)  # not a pyplot figure
    finally:
        writer.close()
