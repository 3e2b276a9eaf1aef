"""The loss landscape's files in ``--out``: ``landscape.csv`` (a row per finished point), ``landscape.json``
(the settings and runs that made it) and ``landscape.png``; reading back what an earlier command wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cnnbench.diagnostics.landscape_plan import Plan
from cnnbench.errors import CnnbenchError

CSV_NAME, JSON_NAME, PNG_NAME = "landscape.csv", "landscape.json", "landscape.png"
CSV_COLUMNS = ("run", "i", "j", "alpha", "beta", "loss", "error")


def read_done(plan_: Plan, restart: bool) -> dict[tuple[str, int, int], dict]:
    """Rows already in ``landscape.csv`` when it was written by the same settings (else refuse/restart)."""
    csv_path, json_path = plan_.out / CSV_NAME, plan_.out / JSON_NAME
    if not csv_path.exists() and not json_path.exists():
        return {}
    if restart:
        csv_path.unlink(missing_ok=True)
        json_path.unlink(missing_ok=True)
        (plan_.out / PNG_NAME).unlink(missing_ok=True)
        return {}
    try:
        saved = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        saved = None
    if saved != plan_.record():
        raise CnnbenchError(
            f"{plan_.out} already holds a landscape ({CSV_NAME}) made with other settings or runs "
            f"(see {JSON_NAME}). Run the same command as before to continue it, pass --out with another "
            f"folder, or --restart to delete it and start over. Nothing was written."
        )
    return read_rows(csv_path)


def read_rows(path: Path) -> dict[tuple[str, int, int], dict]:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # a line cut off by a kill: drop it, keep the rest
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    rows = {}
    for row in csv.DictReader(text.splitlines()):
        try:
            rows[(row["run"], int(row["i"]), int(row["j"]))] = row
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def read_points(path: Path) -> list[dict]:
    """The finished points of landscape.csv, typed (run: str, i/j: int, the rest float), in file order."""
    types = {"run": str, "i": int, "j": int}
    return [{k: types.get(k, float)(v) for k, v in row.items()} for row in read_rows(path).values()]
