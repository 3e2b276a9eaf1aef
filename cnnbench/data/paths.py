"""Where datasets live on disk, and the messages for data that is missing, broken or undownloadable."""

from __future__ import annotations

import os
from pathlib import Path

from cnnbench.errors import CnnbenchError

DATA_ENV_VAR = "CNNBENCH_DATA"

# The most characters of an underlying error's text that a message quotes (a pickle error on a foreign
# file can quote kilobytes of its garbage).
MAX_DETAIL_CHARS = 300


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
        f"(or the {DATA_ENV_VAR} environment variable) to the directory that contains {relative}. To fetch "
        f"it ahead of a sweep: `cnnbench data download NAME --root {root}` (NAME: cifar10, cifar100, svhn)."
    )


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` as one line for a one-paragraph message: line breaks, tabs and other control characters
    become single spaces, and beyond ``limit`` characters it is cut off with "...".

    For the text of an exception from a library (pickle, scipy, urllib), which may span several lines or,
    on a foreign file, quote its bytes.
    """
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def describe(exc: BaseException) -> str:
    """``"TypeName: text"`` of an exception, the text made one line by ``one_line``."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def download_error(what: str, url: str, expected: Path, exc: BaseException) -> CnnbenchError:
    """The download failed (no network, server error, checksum mismatch...)."""
    return CnnbenchError(
        f"Could not download {what} from {url} ({describe(exc)}). Check the network connection and retry, "
        f"or download it manually on a machine that has access and put it so that {expected} exists "
        f"(extract it, if it is an archive); then run again."
    )


def corrupt_error(
    what: str, path: Path, reason: str, redo: Path, cause: BaseException | None = None
) -> CnnbenchError:
    """``path`` exists but is not a valid file of the format; ``redo`` is what to delete and fetch again.

    ``cause``, the exception the reader got, is quoted after ``reason`` in parentheses. Both are made one
    line (and cut if very long) here, so the message stays one paragraph whatever the file holds: the
    text of an error about a foreign file can span lines or quote the file's bytes.
    """
    detail = one_line(reason) + (f" ({describe(cause)})" if cause is not None else "")
    return CnnbenchError(
        f"{what} file {path} is not valid: {detail}. The download or extraction was probably interrupted or "
        f"the file was replaced: delete {redo} and download it again (data.download=true) or re-extract it "
        f"from the official archive."
    )
