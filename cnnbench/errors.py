"""The one exception type that reaches the user as a message instead of a traceback."""


class CnnbenchError(Exception):
    """Bad input or a bad file: the message names the problem and the fix, in one paragraph.

    The CLI prints it without a traceback and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def print_error(message: str) -> None:
    """How every command shows a user error: ``error: <message>`` on stderr, no traceback."""
    from rich.console import Console
    from rich.markup import escape

    # escape: a message may hold brackets (`pip install "cnnbench[onnx]"`, `[4000,6000]`), not markup.
    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True
    )
