"""The outputs root's index of run identities: ``<root>/.cnnbench-index/`` (docs/reuse.md).

Finding the runs with a given identity among thousands of run folders must not read them all, so each
identity has a folder ``<root>/.cnnbench-index/v1/<identity>/`` holding one small JSON file per run
(``<key of the run's path>.json``: the run's path relative to the root, its status and elapsed time when
written). Each file has one writer, the run it describes, and is written whole under a temporary name
then renamed into place (``os.replace``), so many jobs of an array finishing at once on a shared file
system never leave a half-written or lost entry: there is no shared file that two writers rewrite.

The run folders stay the source of truth: an entry only says where to look, and every lookup checks the
folder it names (gone, or of another identity: the entry is dropped). A missing index (a new outputs
root, one made by an older cnnbench, or deleted by hand) is rebuilt from the run folders on first use;
`cnnbench runs` reads every folder anyway and adds the entries that are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.rundir.files import write_json_atomic

INDEX_NAME = ".cnnbench-index"
VERSION = "v1"
BUILT_MARK = "built.json"  # written after a full build: its presence says the index is complete


def index_root(root: Path) -> Path:
    return Path(root) / INDEX_NAME / VERSION


def identity_folder(root: Path, digest: str) -> Path:
    return index_root(root) / digest


def _run_key(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:24]


def _relative(root: Path, run_dir: Path) -> str:
    root, run_dir = Path(os.path.abspath(root)), Path(os.path.abspath(run_dir))
    try:
        return run_dir.relative_to(root).as_posix()
    except ValueError:
        return str(run_dir)  # a run outside the root (reuse.store names another tree): absolute


def register(root: Path, run_dir: Path, digest: str, **facts: Any) -> None:
    """Write (or replace) the run's own entry under its identity: atomic, one writer per file."""
    relative = _relative(root, run_dir)
    folder = identity_folder(root, digest)
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "run": relative,
        "identity": digest,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **facts,
    }
    write_json_atomic(folder / f"{_run_key(relative)}.json", entry)


def unregister(root: Path, run_dir: Path, digest: str) -> None:
    """Remove the run's own entry (a job refused before its run started)."""
    with suppress(OSError):
        (identity_folder(root, digest) / f"{_run_key(_relative(root, run_dir))}.json").unlink()


def is_built(root: Path) -> bool:
    return (index_root(root) / BUILT_MARK).is_file()


def build(root: Path) -> int:
    """Index every run folder under ``root`` (the cold start); returns how many runs were indexed.
    Entries of runs indexed meanwhile by their own jobs are rewritten with the same content."""
    from cnnbench.rundir.files import read_metrics
    from cnnbench.rundir.find import runs_under
    from cnnbench.rundir.identity import run_identity

    count = 0
    for run_dir in runs_under(Path(root)):
        digest = run_identity(run_dir)
        if digest is None:
            continue
        metrics = read_metrics(run_dir) or {}
        register(
            root,
            run_dir,
            digest,
            status=metrics.get("status"),
            elapsed_seconds=metrics.get("elapsed_seconds"),
        )
        count += 1
    marker = index_root(root) / BUILT_MARK
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        marker, {"runs": count, "built": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    )
    return count


def ensure_built(root: Path) -> None:
    if not is_built(root):
        build(root)


def runs_with(root: Path, digest: str) -> list[Path]:
    """The run folders the index names for ``digest``, checked against the folders themselves: an
    entry whose folder is gone or now holds another identity is removed."""
    from cnnbench.rundir.identity import run_identity

    ensure_built(root)
    folder = identity_folder(root, digest)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return []
    found: list[Path] = []
    for name in names:
        entry_path = folder / name
        try:
            entry = json.loads(entry_path.read_text())
            run_dir = Path(root) / entry["run"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue  # a file another process is renaming into place right now, or damaged: skip it
        if run_dir.is_dir() and run_identity(run_dir) == digest:
            found.append(run_dir)
        elif not run_dir.exists():
            with suppress(OSError):
                entry_path.unlink()
    return found
