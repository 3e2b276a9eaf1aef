"""Where datasets live on disk, and the messages for data that is missing, broken or undownloadable."""

from __future__ import annotations

import os
from pathlib import Path

from cnnbench.errors import CnnbenchError

DATA_ENV_VAR = "CNNBENCH_DATA"


def default_data_root() -> Path:
    """``$CNNBENCH_DATA`` if set, else ``$XDG_CACHE_HOME/cnnbench/data`` or ``~/.cache/cnnbench/data``."""
    explicit = os.environ.get(DATA_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser().absolute()
    # The XDG spec says an empty XDG_CACHE_HOME counts as unset.
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(cache).expanduser() / "cnnbench" / "data").absolute()


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root to use: ``root`` with ``~`` expanded, or the default when ``root`` is None or empty."""
    if root is None or str(root) == "":
        return default_data_root()
    # Absolute, so that error messages name the exact folder even if the working directory changes.
    return Path(root).expanduser().absolute()


def missing_error(what: str, root: Path, expected: Path, source_url: str) -> CnnbenchError:
    """``expected`` (a folder or file under ``root``) does not exist and downloading was not allowed."""
    relative = expected.relative_to(root).as_posix()
    if source_url.endswith((".tar.gz", ".tgz", ".zip")):
        manual = f"download {source_url} yourself and extract it in {root} (it contains {relative})"
    else:
        manual = f"download {source_url} yourself and save it as {expected}"
    return CnnbenchError(
        f"{what} data not found: looked for {expected} and it does not exist. Either set "
        f"data.download=true to download it, or {manual}; if the data is somewhere else, set data.root=... "
        f"(or the {DATA_ENV_VAR} environment variable) to the directory that contains {relative}."
    )


def download_error(what: str, url: str, expected: Path, exc: BaseException) -> CnnbenchError:
    """The download failed (no network, server error, checksum mismatch...)."""
    return CnnbenchError(
        f"Could not download {what} from {url} ({type(exc).__name__}: {exc}). Check the network connection "
        f"and retry, or download it manually on a machine that has access and put it so that {expected} "
        f"exists (extract it, if it is an archive); then run again."
    )


def corrupt_error(what: str, path: Path, reason: str, redo: Path) -> CnnbenchError:
    """``path`` exists but is not a valid file of the format; ``redo`` is what to delete and fetch again."""
    return CnnbenchError(
        f"{what} file {path} is not valid: {reason}. The download or extraction was probably interrupted "
        f"or the file was replaced: delete {redo} and download it again (data.download=true) or re-extract "
        f"it from the official archive."
    )
