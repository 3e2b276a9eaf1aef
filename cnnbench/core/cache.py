"""cnnbench's per-machine cache folder (``$CNNBENCH_CACHE``, default ``~/.cache/cnnbench``) and its
small JSON files, written atomically under a file lock so that parallel jobs on one machine agree."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

CACHE_ENV = "CNNBENCH_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cnnbench"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (fcntl; parallel jobs on one machine probe once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no fcntl (Windows) or no locking on this filesystem
            pass
        yield


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def entry_name(key: Mapping[str, Any]) -> str:
    """The name a cached answer is stored under: its key (what changes the answer) as canonical JSON."""
    return json.dumps(key, sort_keys=True)


def cached_measurement(
    path: Path,
    section: str,
    key: Mapping[str, Any],
    measure: Callable[[], dict[str, Any]],
    reuse: Callable[[dict[str, Any]], bool] = lambda entry: True,
) -> tuple[dict[str, Any], bool]:
    """The answer stored in ``path``'s ``section`` under ``key``, or ``measure()``'s, stored there.

    All under the file's lock, so parallel jobs on one machine measure once and the others read the
    answer. ``reuse(entry)`` says whether a stored answer is used (False: measured again and replaced).
    Returns the answer and whether it was read from the file.
    """
    name = entry_name(key)
    with locked(path):
        data = read_json(path)
        entry = (data.get(section) or {}).get(name)
        if entry and reuse(entry):
            return entry, True
        entry = measure()
        data.setdefault(section, {})[name] = entry
        write_json(path, data)
        return entry, False
