"""`cnnbench data download|verify|list`: the datasets on disk, fetched ahead of a sweep and checked."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnbench.cli.app import app, run

data_app = typer.Typer(
    help="Fetch cifar10, cifar100 and svhn ahead of a sweep, and check what is on disk.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
DataNamesArg = Annotated[list[str], typer.Argument(help="cifar10, cifar100 and/or svhn.", show_default=False)]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        "--root", help="Data root (default: $CNNBENCH_DATA or ~/.cache/cnnbench/data).", show_default=False
    ),
]


@data_app.command("download")
def data_download(
    names: DataNamesArg,
    root: DataRootOpt = None,
    extra: Annotated[bool, typer.Option("--extra", help="SVHN: extra_32x32.mat too.")] = False,
) -> None:
    """Download and check each dataset into the data root, once even if jobs run at the same time.

    Mirrors: CNNBENCH_CIFAR10_URL / _MD5, CNNBENCH_CIFAR100_URL / _MD5, CNNBENCH_SVHN_URL (a URL,
    file:// URL or local path). Example: cnnbench data download cifar10 --root /shared/data
    """
    from cnnbench.commands.data import download_command

    run(lambda: download_command(names, root, extra=extra))


@data_app.command("verify")
def data_verify(names: DataNamesArg, root: DataRootOpt = None) -> None:
    """Check every file against its published MD5 (offline); exit 1 if any is missing or bad."""
    from cnnbench.commands.data import verify_command

    run(lambda: verify_command(names, root))


@data_app.command("list")
def data_list(root: DataRootOpt = None) -> None:
    """What is in the data root: each dataset's folder, files and archive, with sizes (offline)."""
    from cnnbench.commands.data import list_command

    run(lambda: list_command(root))
