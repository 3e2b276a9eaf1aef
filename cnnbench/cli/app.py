"""The `cnnbench` Typer app: the group that turns usage errors into one paragraph, the options several
commands share, and ``run``, the one way a command calls its body (``cnnbench.commands``) and exits."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer.core import TyperGroup

from cnnbench.core.overrides import groups_help
from cnnbench.errors import print_error


class CnnbenchGroup(TyperGroup):
    """Every command's usage errors (an unknown option, a missing argument, a typo in a command) as the
    one-paragraph ``error:`` that every other refusal uses, with the command's help to look at."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # type: ignore[override]
        from typer._click import exceptions
        from typer.exceptions import Abort

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())  # `cnnbench` or `cnnbench data` alone: the help, exit 0
            code = 0
        except exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "cnnbench"
            message = exc.format_message().rstrip()
            print_error(f"{message}{'' if message.endswith(('.', '?')) else '.'} See `{where} -h`.")
            code = exc.exit_code
        except exceptions.ClickException as exc:
            print_error(exc.format_message())
            code = exc.exit_code
        except Abort:
            print_error("Aborted.")
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="cnnbench",
    cls=CnnbenchGroup,
    help=(
        "Train plain and residual CIFAR nets and compare them (He et al. 2016, Figure 6). "
        "Runs land in outputs/; open them with `tensorboard --logdir outputs`."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
    pretty_exceptions_enable=False,
)

# Commands that pass Hydra overrides (and Hydra's flags) through; -h/--help stay cnnbench's own help.
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
GROUPS_EPILOG = "Config groups (group=option):\n\n" + groups_help()


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from cnnbench.version import __version__

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        typer.echo(
            f"cnnbench {__version__} (torch {installed('torch')}, "
            f"hydra-core {installed('hydra-core')}, Python {sys.version.split()[0]})"
        )
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=version_callback, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train plain and residual CIFAR nets and compare them (He et al. 2016, Figure 6)."""


OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides, e.g. model=plain depth=56 trainer.max_iters=300 (and Hydra flags).",
        show_default=False,
    ),
]
FoldersArg = Annotated[list[Path], typer.Argument(help="Run folders or sweep folders.", show_default=False)]
RunsArg = Annotated[list[Path], typer.Argument(help="Run folders to compare.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON (for scripts).")]
MultirunOpt = Annotated[
    bool,
    typer.Option(
        "--multirun", "-m", help="Sweep: one job per combination of comma-separated values (Hydra multirun)."
    ),
]


def run(body: Callable[[], int | None]) -> NoReturn:
    """Call a command's body and exit with its code; a CnnbenchError becomes its one-paragraph message
    and its exit code, never a traceback."""
    from cnnbench.errors import CnnbenchError

    try:
        code = body()
    except CnnbenchError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code or 0)
