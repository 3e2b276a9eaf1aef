"""The report table as CSV (numbers), Markdown (report.md) and a rich Table (terminal)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnbench.reporting.reference import family_note
from cnnbench.reporting.summary import Row, status_counts, value_text

# Column names of the human-readable tables.
BEST_TEST = "best test % (selected on test, optimistic)"
AT_BEST_VAL = "test % at best val"

CSV_COLUMNS = (
    "data",
    "augment",
    "model",
    "depth",
    "options",
    "numerics",
    "status",
    "config_status",
    "n_seeds",
    "seeds",
    "params",
    "iteration",
    "max_iters",
    "train_error_pct",
    "train_error_pct_std",
    "test_error_pct",
    "test_error_pct_std",
    "best_test_error_pct",
    "test_error_at_best_val_pct",
    "test_error_at_best_val_pct_std",
    "paper_test_error_pct",
    "paper_test_error_mean_pct",
    "diff_pct",
    "paper_params_m",
    "paper_method",
    "paper_source",
    "message",
    "runs",
)


def _num(value: float | None, digits: int = 4) -> str | float:
    return "" if value is None else round(value, digits)


def csv_record(row: Row) -> dict[str, Any]:
    paper = row.paper or {}
    return {
        "data": row.data,
        "augment": row.augment or "",
        "model": row.model,
        "depth": "" if row.depth is None else row.depth,
        "options": row.options_text,
        "numerics": row.numerics or "",
        "status": row.status,
        "config_status": row.config_status,
        "n_seeds": len(row.runs),
        "seeds": " ".join("?" if s is None else str(s) for s in row.seeds),
        "params": "" if row.params is None else row.params,
        "iteration": "" if row.iteration is None else row.iteration,
        "max_iters": "" if row.max_iters is None else row.max_iters,
        "train_error_pct": _num(row.train_error.mean),
        "train_error_pct_std": _num(row.train_error.std),
        "test_error_pct": _num(row.test_error.mean),
        "test_error_pct_std": _num(row.test_error.std),
        "best_test_error_pct": _num(row.best_test_error),
        "test_error_at_best_val_pct": _num(row.test_error_at_best_val.mean),
        "test_error_at_best_val_pct_std": _num(row.test_error_at_best_val.std),
        "paper_test_error_pct": paper.get("test_error", ""),
        "paper_test_error_mean_pct": paper.get("test_error_mean") or "",
        "diff_pct": _num(row.diff),
        "paper_params_m": paper.get("params_m") or "",
        "paper_method": paper.get("method", ""),
        "paper_source": paper.get("citation", ""),
        "message": " | ".join(row.messages),
        "runs": ";".join(str(r.path) for r in row.runs),
    }


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_record(r) for r in rows)
    return path


# ---- human-readable cells (Markdown and terminal) ------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _params(value: float | None, millions: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:g}M" if millions else f"{value / 1e6:.2f}M"


def _iterations(row: Row) -> str:
    if row.iteration is None:
        return "—"
    if row.status == "completed" or row.max_iters is None:
        return f"{row.iteration:,}"
    return f"{row.iteration:,} / {row.max_iters:,}"


def _paper(row: Row) -> str:
    if row.paper is None:
        return "—"
    text = _pct(row.paper["test_error"])
    if row.paper.get("test_error_mean") is not None:
        std = row.paper.get("test_error_std")
        text += f" ({row.paper['test_error_mean']:.2f}" + (f" ± {std:.2f})" if std is not None else ")")
    return text


def _status(row: Row) -> str:
    """The row's status, plus the configuration's other runs: "completed (also 1 diverged)"."""
    others = [r for r in row.all_runs if r.status != row.status]
    return f"{row.status} (also {status_counts(others)})" if others else row.status


def display_columns(rows: Sequence[Row]) -> list[str]:
    """Data and augmentation get columns only when they vary (else they are said once above the table);
    options and the paper's columns only when some row has something to show there."""
    columns = []
    if len({r.data for r in rows}) > 1:
        columns.append("data")
    if len({r.augment for r in rows}) > 1:
        columns.append("augment")
    cells = [display_cells(r, rows) for r in rows]
    optional = {"options", AT_BEST_VAL, "paper test %", "Δ vs paper", "paper params"}
    return columns + [
        c
        for c in [
            "model",
            "depth",
            "options",
            "numerics",
            "params",
            "seeds",
            "iterations",
            "train error %",
            "test error %",
            AT_BEST_VAL,
            BEST_TEST,
            "status",
            "paper test %",
            "Δ vs paper",
            "paper params",
        ]
        if c not in optional or any(cell[c] != "—" for cell in cells)
        # Numerics shared by all rows are said once above the table (common_setting).
        if c != "numerics" or len({r.numerics for r in rows}) > 1
    ]


def _shown_options(row: Row, rows: Sequence[Row]) -> str:
    """The options that tell the row apart: those whose value varies among rows of its model family, and
    the distinguishing non-model settings (dotted keys). ``block=basic`` on every row says nothing."""
    family = [r for r in rows if r.model == row.model]

    def varies(key: str) -> bool:
        return len({repr(r.options.get(key)) for r in family}) > 1

    keys = sorted((k for k in row.options if "." in k or varies(k)), key=lambda k: ("." in k, k))
    return ", ".join(f"{k}={value_text(row.options[k])}" for k in keys)


def display_cells(row: Row, rows: Sequence[Row] = ()) -> dict[str, str]:
    options = _shown_options(row, rows) if rows else row.options_text
    return {
        "data": row.data,
        "augment": row.augment or "?",
        "model": row.model,
        "depth": "—" if row.depth is None else str(row.depth),
        "options": options or "—",
        "numerics": row.numerics or "—",
        "params": _params(row.params),
        "seeds": str(len(row.runs)),
        "iterations": _iterations(row),
        "train error %": row.train_error.text(),
        "test error %": row.test_error.text(),
        AT_BEST_VAL: row.test_error_at_best_val.text(),
        BEST_TEST: _pct(row.best_test_error),
        "status": _status(row),
        "paper test %": _paper(row),
        "Δ vs paper": "—" if row.diff is None else f"{row.diff:+.2f}",
        "paper params": _params((row.paper or {}).get("params_m"), millions=True),
    }


def common_setting(rows: Sequence[Row]) -> str:
    """E.g. "Data: cifar10, augmentation: standard. Numerics: fast (bf16, BN/128)." when all rows share
    them."""
    parts = []
    if len({r.data for r in rows}) == 1:
        parts.append(f"data: {rows[0].data}")
    if len({r.augment for r in rows}) == 1:
        parts.append(f"augmentation: {rows[0].augment or 'unknown'}")
    text = (", ".join(parts).capitalize() + ".") if parts else ""
    numerics = {r.numerics for r in rows}
    if len(numerics) == 1 and rows[0].numerics:  # capitalize() above would lower "BN"
        text = f"{text} Numerics: {rows[0].numerics}.".strip()
    return text


def notes(rows: Sequence[Row], warnings: Sequence[str] = ()) -> list[str]:
    """The footnotes: how to read the numbers, missing paper numbers, sources, failures, warnings."""
    out = [
        "Errors are each run's last evaluation, in percent; mean ± sample standard deviation over seeds "
        "(std from two seeds up). Runs that did not complete have their own rows, by status, and are never "
        "averaged with completed ones.",
        f"{BEST_TEST}: the lowest test error any seed reached at an evaluation. It is picked on the test "
        "set itself, so it is optimistic: not an estimate of the error on new data.",
    ]
    if any(r.test_error_at_best_val.mean is not None for r in rows):
        out.append(
            f"{AT_BEST_VAL}: the test error of the weights with the lowest validation error (data.val_size; "
            "saved as best.pt), mean ± std over seeds: model selection without looking at the test set."
        )
    if any(r.numerics for r in rows):
        out.append(
            "Numerics (from each run's env.json): the arithmetic, and how many images each BatchNorm "
            "normalized over in training (BN/N). paper = fp32 and 64 images, as on He et al.'s 2 GPUs x 64 "
            "(numerics=paper); fast = cnnbench's default (bf16 where it measured faster, BatchNorm over the "
            "whole batch); custom = other trainer.bn_group settings; tf32 = fp32 with TF32 convolutions "
            "(PyTorch's default on recent GPUs)."
        )
    if any(r.paper for r in rows):
        out.append(
            "Δ vs paper: measured mean minus the paper's number, in percentage points, for completed runs; "
            "where the paper gives a mean over runs next to its best (ResNet-110: 6.43, mean 6.61 ± 0.16 "
            "over 5 runs) the mean is used."
        )
    for model in sorted({r.model for r in rows}):
        note = family_note(model)
        if note:
            out.append(f"{model}: {' '.join(note.split())}")
    for key, citation in sorted({(r.paper["source"], r.paper["citation"]) for r in rows if r.paper}):
        out.append(f"Source [{key}]: {citation}")
    for row in rows:
        if row.paper and row.paper.get("note"):
            out.append(f"{row.name}: paper number {row.paper['note']}.")
        out += [f"{row.name} [{row.status}] {m}" for m in row.messages]
    if any(not run.has_config for r in rows for run in r.runs):
        out.append(
            "Some runs have no .hydra/config.yaml: they are grouped by metrics.json alone (model, depth, "
            "data, seed) and, their augmentation being unknown, get no paper comparison."
        )
    return out + list(warnings)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def markdown(rows: Sequence[Row], sources: Sequence[Path], image: str, warnings: Sequence[str] = ()) -> str:
    n_runs = sum(len(r.runs) for r in rows)
    n_configs = len({(r.name, r.data, r.augment) for r in rows})
    columns = display_columns(rows)
    lines = [
        "# cnnbench report",
        "",
        f"{_plural(n_runs, 'run')} in {_plural(n_configs, 'configuration')}, read from "
        + ", ".join(f"`{p}`" for p in sources)
        + ". "
        + common_setting(rows),
        "",
        f"![Training (dashed) and test (solid) error per iteration]({image})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = display_cells(row, rows)
        lines.append("| " + " | ".join(_md_cell(cells[c]) for c in columns) + " |")
    lines += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in notes(rows, warnings)]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[Row], title: str = "cnnbench report"):
    """The table for the terminal (a ``rich.table.Table``)."""
    from rich.table import Table

    columns = display_columns(rows)
    table = Table(title=title, caption=common_setting(rows) or None)
    numeric = {
        "depth",
        "params",
        "seeds",
        "iterations",
        "train error %",
        "test error %",
        AT_BEST_VAL,
        BEST_TEST,
        "paper test %",
        "Δ vs paper",
        "paper params",
    }
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    for row in rows:
        cells = display_cells(row, rows)
        style = (
            None
            if row.status == "completed"
            else ("red" if row.status in ("diverged", "failed") else "yellow")
        )
        table.add_row(*(cells[c] for c in columns), style=style)
    return table
