"""The `cnnbench` command line, the CLI face: each command is its options, one call into its body in
``cnnbench.commands`` (the same body the Python API calls) and its exit code. Heavy imports happen inside
the bodies, so `cnnbench -h` and `cnnbench status` start without torch."""

from cnnbench.cli import data, diagnostics, results, training  # noqa: F401  (each registers its commands)
from cnnbench.cli.app import app

# `cnnbench -h` lists the commands in the order a user meets them, not the order of the modules.
ORDER = (
    "train",
    "config",
    "resume",
    "status",
    "runs",
    "report",
    "eval",
    "export",
    "analyze",
    "landscape",
    "models",
)
ORDER += ("bench",)
app.registered_commands.sort(
    key=lambda info: ORDER.index(info.name or info.callback.__name__)  # type: ignore[union-attr]
)


def main() -> None:
    # torchrun and `python -m cnnbench` enter here too.
    app()


__all__ = ["app", "main"]
