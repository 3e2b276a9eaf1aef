"""Fetching the datasets: one download per data root, and never a half-written folder.

Several jobs may start on an empty data root at once (joblib workers, a SLURM array). Each dataset has a
lock file in the data root (``.cifar10.lock``, ...; never deleted, deleting a lock file races) and the
whole fetch runs under an exclusive ``fcntl.flock`` on it:

- A job that finds the lock taken says that it waits for another job's download, then blocks; once it
  holds the lock it looks again and uses what the other job finished instead of downloading it again.
- The archive (or file) is downloaded to a temporary name next to its final one (``.NAME.XXXX.part``),
  its MD5 is checked, and only then is it renamed to its final name.
- An archive is extracted into a temporary folder in the same root (``.FOLDER.XXXX.tmp``) and the
  dataset folder is renamed into place when complete: a reader sees the whole folder or none.
- An archive whose members would land outside that folder (absolute paths, ``..``, links pointing out
  of it) or that holds device files is refused, nothing kept: through ``tarfile``'s ``data`` filter where
  Python has it (3.10.12+, 3.11.4+), else by checking every member before anything is extracted.
- Leftovers of an interrupted job (``.part`` files, ``.tmp`` folders, an archive with a wrong MD5) are
  removed by the next job that holds the lock, which then downloads or extracts again.

Network filesystems: ``flock`` works across machines on NFS with Linux 2.6.12 or newer (the kernel maps
it to NFS byte-range locks; NFSv4, or NFSv3 with lockd running); on older kernels it locks per client
only, so jobs on different nodes can each download (still safely: every job writes its own temporary
names and the renames are atomic, so the worst case is a duplicated download). Lustre needs the
``-o flock`` mount option for cluster-wide locks (``-o localflock`` locks per node; without either,
``flock`` fails). Where ``flock`` fails, the job says so and downloads without the lock, with the same
worst case. To avoid all of this on a cluster, fetch ahead: ``cnnbench data download NAME --root DIR``.

Mirrors: ``data.url`` / ``data.md5`` in the config, else the environment variables
``CNNBENCH_CIFAR10_URL``, ``CNNBENCH_CIFAR10_MD5``, ``CNNBENCH_CIFAR100_URL``, ``CNNBENCH_CIFAR100_MD5``
and ``CNNBENCH_SVHN_URL``, else the official ones. A URL may be ``http(s)://``, ``file://`` or a plain
local path (copied, not downloaded). For SVHN the URL is the folder that holds the ``.mat`` files and
each file is checked against its published MD5.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

from cnnbench.data.paths import DATA_ENV_VAR, describe
from cnnbench.errors import CnnbenchError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60
# flock errors that mean "this filesystem has no (working) locks", not "someone else holds it".
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def env_names(name: str) -> tuple[str, str]:
    """The environment variables that override dataset ``name``'s URL and MD5."""
    key = name.upper()
    return f"CNNBENCH_{key}_URL", f"CNNBENCH_{key}_MD5"


def source(name: str, url: str | None, md5: str | None, official_url: str, official_md5: str | None):
    """(url, md5) to fetch from: the config's values, else the environment's, else the official ones.

    A mirror serves the official archive, so its MD5 defaults to the official one; set ``data.md5`` (or
    the MD5 variable) for a repackaged copy.
    """
    url_var, md5_var = env_names(name)
    chosen_url = url or os.environ.get(url_var) or official_url
    chosen_md5 = md5 or os.environ.get(md5_var) or official_md5
    return str(chosen_url), (str(chosen_md5).lower() if chosen_md5 else None)


def say(message: str) -> None:
    """A progress message: to the log when logging is set up (training), else to stderr."""
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def data_lock(root: Path, name: str, title: str) -> Iterator[bool]:
    """Hold the exclusive lock on dataset ``name`` in ``root``; yields False if the filesystem has none."""
    make_root(root)
    lock_path = root / f".{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"Waiting for another job's download of {title} into {root} (lock file {lock_path}).")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
            locked = False
            say(
                f"Could not lock {lock_path} ({describe(exc)}): the filesystem has no flock (Lustre needs "
                f"-o flock). Downloading {title} without the lock; parallel jobs may download it twice."
            )
        yield locked
    finally:
        os.close(fd)  # releases the lock


def make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnbenchError(
            f"Cannot create the data root {root} ({describe(exc)}). Set data.root=... (or {DATA_ENV_VAR}) "
            f"to a folder you can write, or create {root} yourself."
        ) from exc


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open(url: str) -> tuple[BinaryIO, int | None]:
    """A readable stream of ``url`` (http(s), file:// or a local path) and its size if known."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
        return path.open("rb"), path.stat().st_size
    request = urllib.request.Request(url, headers={"User-Agent": "cnnbench"})
    response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (the user's URL)
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def _copy_with_progress(stream: BinaryIO, out: BinaryIO, total: int | None, label: str) -> str:
    """Copy ``stream`` to ``out``; return the MD5. A progress bar on a terminal only."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    digest = hashlib.md5(usedforsecurity=False)
    console = Console(stderr=True)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as bar:
        task = bar.add_task(label, total=total)
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            bar.advance(task, len(chunk))
    return digest.hexdigest()


def fetch_file(url: str, dest: Path, md5: str | None) -> None:
    """Download (or copy) ``url`` to ``dest``: to a temporary name, MD5 checked, then renamed.

    Raises ``OSError`` (``URLError`` included) when it cannot be read and ``ChecksumError`` on a
    mismatch; nothing is left at ``dest`` in either case.
    """
    say(f"Downloading {url} to {dest}.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        stream, total = _open(url)
        with stream, os.fdopen(fd, "wb") as out:
            got = _copy_with_progress(stream, out, total, dest.name)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes it private; the data is shared
        if md5 and got != md5:
            raise ChecksumError(url, got, md5)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class ChecksumError(Exception):
    def __init__(self, url: str, got: str, expected: str) -> None:
        super().__init__(f"the file from {url} has MD5 {got}, expected {expected}")
        self.url, self.got, self.expected = url, got, expected


def _remove_leftovers(folder: Path, *names: str) -> None:
    """Temporary files and folders of interrupted jobs (only called while holding the lock)."""
    for name in names:
        for leftover in list(folder.glob(f".{name}.*.part")) + list(folder.glob(f".{name}.*.tmp")):
            say(f"Removing {leftover}, left by an interrupted download or extraction.")
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _unsafe_archive(archive: Path, root: Path, member: str, problem: str) -> CnnbenchError:
    return CnnbenchError(
        f"The archive {archive} holds an unsafe member {member!r} ({problem}): extracting it could write "
        f"outside {root} or create special files, so cnnbench refused it and kept nothing of it. This is "
        f"not the official archive; delete it and point data.url (or its CNNBENCH_<NAME>_URL variable) at "
        f"the official archive or a faithful copy, then run again."
    )


def _absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or (name[1:2] == ":" and name[:1].isalpha())


def _data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's data filter, which strips a leading ``/`` and extracts the member inside the folder; an
    official archive has no absolute names, so one is refused here as on Pythons without the filter."""
    if _absolute(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, path)


def _resolve(parts: list[str], links: set[str]) -> tuple[list[str] | None, str | None]:
    """``parts`` of a path inside the archive's folder, normalized without the file system: the parts, or
    (None, why) when the path leaves the folder or goes through one of the archive's symbolic ``links``
    (where ``..`` no longer means what it says)."""
    out: list[str] = []
    for i, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None, "it points outside the archive's folder"
            out.pop()
        else:
            out.append(part)
        if i < len(parts) - 1 and "/".join(out) in links:
            return None, f"it goes through the symbolic link {'/'.join(out)!r} of the archive"
    return out, None


def checked_members(archive: Path, root: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, checked before anything is extracted, for Pythons without tarfile's data
    filter: no absolute path, no ``..``, no device file or FIFO, no link pointing outside the folder or
    through another link; ownership and setuid/setgid/other-writable bits dropped, as the filter does."""
    members = tar.getmembers()
    links = {"/".join(p for p in m.name.split("/") if p not in ("", ".")) for m in members if m.issym()}
    for member in members:
        name = member.name
        if _absolute(name):
            raise _unsafe_archive(archive, root, name, "an absolute path")
        parts = name.split("/")
        if ".." in parts:
            raise _unsafe_archive(archive, root, name, "a '..' component")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise _unsafe_archive(archive, root, name, "a device file or FIFO")
        _, why = _resolve(parts, links)
        if why is None and (member.issym() or member.islnk()):
            target = member.linkname
            if _absolute(target):
                raise _unsafe_archive(archive, root, name, f"a link to the absolute path {target!r}")
            # A symbolic link is relative to its own folder; a hard link names another member.
            base = [p for p in parts[:-1] if p not in ("", ".")] if member.issym() else []
            _, why = _resolve(base + target.split("/"), links)
            why = why and f"a link to {target!r}: {why}"
        if why is not None:
            raise _unsafe_archive(archive, root, name, why)
        member.mode &= 0o755
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return members


def _extract(archive: Path, root: Path, folder_name: str) -> None:
    """Extract ``archive`` into a temporary folder in ``root``, then rename its ``folder_name`` into place."""
    say(f"Extracting {archive} into {root}.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", suffix=".tmp", dir=root))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                try:
                    tar.extractall(tmp, filter=_data_filter)
                except tarfile.FilterError as exc:
                    member = exc.tarinfo.name if exc.tarinfo is not None else "?"
                    raise _unsafe_archive(archive, root, member, str(exc)) from None
            else:  # Python < 3.10.12 / 3.11.4: the same refusals, checked here
                members = checked_members(archive, root, tar)
                with warnings.catch_warnings():  # our own checks stand in for the filter
                    warnings.simplefilter("ignore", DeprecationWarning)
                    tar.extractall(tmp, members=members)  # noqa: S202
        extracted = tmp / folder_name
        if not extracted.is_dir():
            raise CnnbenchError(
                f"The archive {archive} does not contain the folder {folder_name}: it is not the expected "
                f"archive. Delete it and point data.url at the official archive (or a copy of it)."
            )
        try:
            os.rename(extracted, root / folder_name)
        except OSError:
            if not (root / folder_name).is_dir():  # else another (unlocked) job was faster: use its
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_error(title: str, name: str, url: str, root: Path, expected: Path, exc: BaseException):
    """The download failed: what to run where there is network and what to copy here."""
    relative = expected.relative_to(root).as_posix()
    url_var, md5_var = env_names(name)
    if isinstance(exc, ChecksumError):
        return CnnbenchError(
            f"Downloaded {title} from {url}, but {exc}: the download was corrupted or the mirror serves "
            f"another file. Nothing was kept. Retry; for a mirror of a repackaged archive, set data.md5 "
            f"(or {md5_var}) to its MD5; or download it manually and put it so that {expected} exists."
        )
    return CnnbenchError(
        f"Could not download {title} from {url} ({describe(exc)}); this machine may have no network "
        f"access. On a machine that has it, run `cnnbench data download {name} --root DIR` and copy "
        f"DIR/{relative} to {expected} here (or download {url} manually and put it so that {expected} "
        f"exists, extracting it if it is an archive); or set data.url (or {url_var}) to a mirror, a "
        f"file:// URL or a local copy of the archive. Then run again."
    )


def ensure_extracted(
    *, name: str, title: str, root: Path, folder: str, archive: str, url: str, md5: str | None
) -> Path:
    """``root/folder`` from the archive at ``url``, downloaded and extracted once across parallel jobs."""
    target = root / folder
    if target.is_dir():
        return target
    with data_lock(root, name, title) as locked:
        if target.is_dir():
            say(f"{title} is in {target} now (another job fetched it).")
            return target
        if locked:
            _remove_leftovers(root, archive, folder)
        archive_path = root / archive
        if archive_path.is_file() and md5 and file_md5(archive_path) != md5:
            say(f"{archive_path} has the wrong MD5 (an interrupted or foreign download): fetching it again.")
            archive_path.unlink()
        if not archive_path.is_file():
            try:
                fetch_file(url, archive_path, md5)
            except (OSError, ChecksumError) as exc:  # URLError is an OSError
                raise fetch_error(title, name, url, root, target, exc) from exc
        try:
            _extract(archive_path, root, folder)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CnnbenchError(
                f"Could not extract {archive_path} ({describe(exc)}). Delete it and run again to download "
                f"it anew, or extract it yourself so that {target} exists."
            ) from exc
    return target


def ensure_file(*, name: str, title: str, root: Path, path: Path, url: str, md5: str | None) -> Path:
    """``path`` (a single file under ``root``) from ``url``, downloaded once across parallel jobs."""
    if path.is_file():
        return path
    with data_lock(root, name, title) as locked:
        if path.is_file():
            say(f"{path} is there now (another job fetched it).")
            return path
        make_root(path.parent)
        if locked:
            _remove_leftovers(path.parent, path.name)
        try:
            fetch_file(url, path, md5)
        except (OSError, ChecksumError) as exc:
            raise fetch_error(title, name, url, root, path, exc) from exc
    return path
