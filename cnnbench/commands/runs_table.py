"""`cnnbench runs [FOLDER] [KEY=VALUE...]`: one table of every run under an outputs root, whichever
sweep trained it: identity, model, depth, seed, key settings, status, final errors, folder.

Reads small files only (metrics.json, identity.json, env.json, .hydra/overrides.yaml; the saved config
only for runs without identity.json or for a filter on a config key) and imports no torch. Filters are
``key=value`` (several: all must hold; ``key=a,b``: any of the values) over the columns or any dotted
config key (``optimizer.lr=0.1``). ``--report`` writes `cnnbench report` of the selection, one run per
identity (a reused copy and its source are one run).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import SAVED_CONFIG, SAVED_OVERRIDES, read_env, read_metrics

COLUMNS = (
    "identity",
    "model",
    "depth",
    "seed",
    "data",
    "numerics",
    "max_iters",
    "status",
    "train_error",
    "test_error",
    "experiment",
    "reused",
    "folder",
)
DEFAULT_ROOT = Path("outputs")
SHOWN = ("identity", "model", "depth", "seed", "data", "numerics", "max_iters", "status")


def _overrides(run_dir: Path) -> dict[str, str]:
    import yaml

    try:
        items = yaml.safe_load((run_dir / SAVED_OVERRIDES).read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    return dict(str(o).split("=", 1) for o in items if isinstance(o, str) and "=" in o)


def _config(run_dir: Path) -> dict[str, Any]:
    """The saved config, flattened (values as saved: an interpolation stays its text)."""
    import yaml

    from cnnbench.rundir.identity import _flatten

    try:
        loaded = yaml.safe_load((run_dir / SAVED_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return _flatten(loaded) if isinstance(loaded, dict) else {}


def run_record(run_dir: Path) -> dict[str, Any]:
    """One row: what the run's small files say."""
    from cnnbench.rundir.identity import SHORT, run_identity
    from cnnbench.rundir.reuse_fill import read_reused

    metrics = read_metrics(run_dir) or {}
    config = {} if metrics else _config(run_dir)
    numerics = (read_env(run_dir) or {}).get("numerics")
    digest = run_identity(run_dir)
    return {
        "identity": digest[:SHORT] if digest else None,
        "model": metrics.get("model", config.get("model.name")),
        "depth": metrics.get("depth", config.get("depth")),
        "seed": metrics.get("seed", config.get("seed")),
        "data": metrics.get("data", config.get("data.name")),
        "numerics": numerics.get("name") if isinstance(numerics, dict) else None,
        "max_iters": metrics.get("max_iters", config.get("trainer.max_iters")),
        "status": metrics.get("status") or "never started",
        "train_error": metrics.get("train_error"),
        "test_error": metrics.get("test_error"),
        "experiment": _overrides(run_dir).get("experiment"),
        "reused": read_reused(run_dir) is not None,
        "folder": str(run_dir),
        "elapsed_seconds": metrics.get("elapsed_seconds"),
        "_identity": digest,
    }


def parse_filters(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model=resnet", "depth=20,56"]`` -> ``[("model", ["resnet"]), ("depth", ["20", "56"])]``."""
    filters = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CnnbenchError(
                f"{item!r} is not a filter; give KEY=VALUE, e.g. `cnnbench runs model=resnet "
                f"status=completed` (KEY: one of {', '.join(COLUMNS[:-1])}, or a config key such as "
                f"optimizer.lr). Nothing was read."
            )
        if key not in COLUMNS and "." not in key:
            raise CnnbenchError(
                f"{key!r} is neither a column of `cnnbench runs` ({', '.join(COLUMNS)}) nor a dotted config "
                f"key (e.g. optimizer.lr, trainer.precision). Nothing was read; fix the filter {item!r}."
            )
        filters.append((key, [v.strip() for v in value.split(",")]))
    return filters


def _same(actual: Any, wanted: str) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return str(actual).lower() == wanted.lower()
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual) == wanted or (actual is None and wanted in ("null", "none", ""))


def matches(record: dict[str, Any], filters: list[tuple[str, list[str]]]) -> bool:
    config: dict[str, Any] | None = None
    for key, values in filters:
        if key in COLUMNS:
            actual = record[key] if key != "identity" else record["_identity"] or ""
            if key == "identity":
                if not any(actual.startswith(v) for v in values):
                    return False
                continue
        else:
            config = _config(Path(record["folder"])) if config is None else config
            if key not in config:
                return False
            actual = config[key]
        if not any(_same(actual, v) for v in values):
            return False
    return True


def collect(folder: Path, filters: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every run under ``folder`` (or ``folder`` itself) matching ``filters``, in folder order. Builds the
    folder's identity index if it has none (rundir/index.py)."""
    from cnnbench.rundir.find import is_run, runs_under
    from cnnbench.rundir.index import build, is_built

    parsed = parse_filters(filters)
    folder = Path(folder)
    if not folder.is_dir():
        raise CnnbenchError(
            f"{folder}: no such folder. Give `cnnbench runs` an outputs folder (default: outputs, where "
            f"`cnnbench train` puts runs and sweeps), a sweep or a run folder."
        )
    found = [folder] if is_run(folder) else list(runs_under(folder))
    records = [run_record(run_dir) for run_dir in found]
    if not is_run(folder) and not is_built(folder):
        with suppress(OSError):  # a read-only outputs folder: the table needs no index
            build(folder)
    return [r for r in records if matches(r, parsed)]


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def one_per_identity(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run and its reused copies are one result: the original (else the first) stands for them."""
    chosen: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["reused"]):
        chosen.setdefault(record["_identity"] or record["folder"], record)
    return [r for r in records if any(r is c for c in chosen.values())]


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def print_table(records: list[dict[str, Any]], folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(records)} run(s) under {folder}")
    for name in SHOWN:
        table.add_column(name)
    table.add_column("train err %", justify="right")
    table.add_column("test err %", justify="right")
    table.add_column("folder", overflow="fold")
    for r in records:
        cells = [r[k] for k in SHOWN]
        shown = [("-" if c is None else str(c)) for c in cells]
        folder_text = r["folder"] + (" (reused)" if r["reused"] else "")
        table.add_row(*shown, _percent(r["train_error"]), _percent(r["test_error"]), folder_text)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def runs_command(
    folder: Path | None,
    filters: Sequence[str],
    as_csv: bool = False,
    as_json: bool = False,
    report: bool = False,
    out: Path | None = None,
) -> int:
    """`cnnbench runs`: the table (or CSV, JSON) of the matching runs; ``report``: `cnnbench report` of
    them, one run per identity."""
    folder = Path(folder) if folder is not None else DEFAULT_ROOT
    records = collect(folder, filters)
    if report:
        from cnnbench.reporting.core import report_command

        chosen = one_per_identity(records)
        if not chosen:
            raise CnnbenchError(
                f"No run under {folder} matches {' '.join(filters) or 'the filters'}; nothing to report. "
                f"List what there is with `cnnbench runs {folder}`."
            )
        return report_command([Path(r["folder"]) for r in chosen], out or Path("report"))
    rows = [public(r) for r in records]
    if as_json:
        print(json.dumps(rows, indent=2))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*COLUMNS, "elapsed_seconds"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print_table(records, folder)
    return 0
