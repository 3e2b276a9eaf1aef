"""Jupyter and hosted notebooks (an IPython kernel): one progress bar updated in place, figures inline.

Nothing here imports IPython unless a kernel is already running it, so scripts and the CLI never pay for
it; a terminal IPython session (no kernel) is treated as a terminal.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any

# A display update is a message to the notebook front end: a few per second reads as live without
# flooding it (digits runs do hundreds of iterations a second).
UPDATE_EVERY_S = 0.25


def kernel_shell() -> Any | None:
    """The IPython shell of a notebook kernel (any front end that runs ipykernel), or None elsewhere."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def show_figures_inline() -> None:
    """Let a notebook show a returned matplotlib ``Figure`` as an image, as ``%matplotlib inline`` does.

    cnnbench draws on Agg canvases, not pyplot, so the inline backend (set up only when pyplot is
    imported) may never have registered its formatters; a format the user configured is left alone."""
    shell = kernel_shell()
    if shell is None:
        return
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    if any(Figure in formatter.type_printers for formatter in formatters.values()):
        return
    select_figure_formats(shell, {"png"})


class _BarView:
    """What the display shows: an HTML progress bar, or a text line where HTML is not rendered."""

    def __init__(self, description: str, completed: int, total: int, text: str) -> None:
        self.description, self.completed, self.total, self.text = description, completed, total, text

    def _repr_html_(self) -> str:
        return (
            f"<div><b>{html.escape(self.description)}</b> "
            f'<progress value="{self.completed}" max="{self.total}" style="width:40%"></progress> '
            f"{self.completed}/{self.total} <span>{html.escape(self.text)}</span></div>"
        )

    def __repr__(self) -> str:
        return f"{self.description} {self.completed}/{self.total} {self.text}".rstrip()


class NotebookBar:
    """One output in the cell, updated in place (an IPython display handle), not a line per update."""

    def __init__(self, description: str, total: int, completed: int = 0) -> None:
        from IPython.display import display

        self.description, self.total = description, total
        self.completed, self.text = completed, ""
        self._last = time.perf_counter()
        self._handle = display(self._view(), display_id=True)

    def _view(self) -> _BarView:
        return _BarView(self.description, self.completed, self.total, self.text)

    def update(self, completed: int, text: str | None = None, force: bool = False) -> None:
        self.completed = completed
        if text is not None:
            self.text = text
        now = time.perf_counter()
        if force or now - self._last >= UPDATE_EVERY_S:
            self._last = now
            self._handle.update(self._view())

    def close(self) -> None:
        self._handle.update(self._view())
