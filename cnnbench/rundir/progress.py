"""Progress of a run: a rich bar on a terminal, one bar updated in place in a notebook, plain periodic
log lines elsewhere (CI, SLURM logs)."""

from __future__ import annotations

import logging
import time

from cnnbench.rundir.logs import is_interactive
from cnnbench.rundir.notebook import NotebookBar, kernel_shell

log = logging.getLogger("cnnbench")


def format_stats(iteration: int, max_iters: int, stats: dict[str, float]) -> str:
    parts = [f"iter {iteration}/{max_iters}"]
    for key, fmt in (
        ("loss/train", "loss {:.4f}"),
        ("error/train", "err {:.2%}"),
        ("error/test", "test err {:.2%}"),
        ("lr", "lr {:.3g}"),
        ("img_per_s", "{:.0f} img/s"),
    ):
        if key in stats:
            parts.append(fmt.format(stats[key]))
    return " | ".join(parts)


class Progress:
    def __init__(self, start: int, max_iters: int, description: str, enabled: bool = True) -> None:
        self.max_iters = max_iters
        self.enabled = enabled
        self.bar = None
        self.notebook: NotebookBar | None = None
        self.started = time.perf_counter()
        self.start_iter = start
        if enabled and is_interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(description, total=max_iters, completed=start, stats="")
            self.bar.start()
        elif enabled and kernel_shell() is not None:
            self.notebook = NotebookBar(description, max_iters, start)

    def advance(self, iteration: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=iteration)
        elif self.notebook is not None:
            self.notebook.update(iteration)

    def report(self, iteration: int, stats: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task, completed=iteration, stats=format_stats(iteration, self.max_iters, stats)
            )
        elif self.notebook is not None:
            text = f"{format_stats(iteration, self.max_iters, stats)} | ETA {self._eta(iteration)}"
            self.notebook.update(iteration, text, force=True)
        elif self.enabled:
            log.info("%s | ETA %s", format_stats(iteration, self.max_iters, stats), self._eta(iteration))

    def _eta(self, iteration: int) -> str:
        done = iteration - self.start_iter
        if done <= 0:
            return "?"
        seconds = (time.perf_counter() - self.started) / done * (self.max_iters - iteration)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.notebook is not None:
            self.notebook.close()
