"""The one exception type that reaches the user as a message instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CnnbenchError(Exception):
    """Bad input or a bad file: the message names the problem and the fix, in one paragraph.

    The CLI prints it without a traceback and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


# Open collections of print_error's messages (innermost last): the Python API raises them instead.
_collectors: list[list[str]] = []


@contextmanager
def collected_errors() -> Iterator[list[str]]:
    """Inside, ``print_error`` keeps its messages in the yielded list instead of printing them: the Python
    API (``cnnbench.train``...) raises the message a command would have printed, word for word."""
    messages: list[str] = []
    _collectors.append(messages)
    try:
        yield messages
    finally:
        _collectors.remove(messages)


def print_error(message: str) -> None:
    """How every command shows a user error: ``error: <message>`` on stderr, no traceback."""
    if _collectors:
        _collectors[-1].append(message)
        return
    from rich.console import Console
    from rich.markup import escape

    # escape: a message may hold brackets (`pip install "cnnbench[onnx]"`, `[4000,6000]`), not markup.
    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True
    )
