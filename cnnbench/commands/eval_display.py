"""`cnnbench eval`'s table (or JSON) in the terminal, and the command's exit code."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from cnnbench.commands.eval_options import EvalOptions, EvalResult, value_text
from cnnbench.commands.evaluate import evaluate_runs

# ---- the table ---------------------------------------------------------------------------------------


def _run_names(results: Sequence[EvalResult]) -> list[str]:
    """Shortest distinguishing names: the folder name, or the path below the common parent."""
    paths = [Path(r.run_dir) for r in results]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    import os

    common = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    return [str(p.resolve().relative_to(common)) or p.name for p in paths]


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def eval_table(results: Sequence[EvalResult], options: EvalOptions):
    """One rich Table for all runs: loss, error, per-class error (a column per class up to 10 classes,
    else the worst three), the weights' iteration and whether the run is complete."""
    from rich.table import Table

    what = f"split {options.split}, weights {options.weights}, TTA {options.tta}, {results[0].precision}"
    what += ", compiled" if results[0].compiled else ""
    datasets = sorted({r.data for r in results})
    if options.data:
        what += ", data " + " ".join(f"{k}={value_text(v)}" for k, v in options.data.items())
    table = Table(title=f"cnnbench eval ({what})", caption=f"Data: {', '.join(datasets)}.")
    classes = {len(r.per_class_error) for r in results}
    per_class = len(classes) == 1 and classes.pop() <= 10
    for column in ("run", "model", "iteration", "images", "loss", "error %"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    if per_class:
        for c in range(len(results[0].per_class_error)):
            table.add_column(f"c{c} %", justify="right")
    else:
        table.add_column("worst classes (error %)")
    table.add_column("run status")
    for name, r in zip(_run_names(results), results, strict=True):
        cells = [name, f"{r.model}-{r.depth}", f"{r.iteration:,}", f"{r.images:,}", f"{r.loss:.4f}"]
        cells.append(_pct(r.error))
        if per_class:
            cells += [_pct(e) for e in r.per_class_error]
        else:
            ranked = sorted(((e, c) for c, e in enumerate(r.per_class_error) if e is not None), reverse=True)[
                :3
            ]
            cells.append(", ".join(f"{c}: {100 * e:.1f}" for e, c in ranked))
        state = "complete" if r.complete else f"incomplete ({r.iteration:,} of {r.max_iters:,} iterations)"
        if r.status not in (None, "completed", "running"):
            state += f", {r.status}"
        cells.append(state)
        table.add_row(*cells, style=None if r.complete else "yellow")
    return table


def eval_command(paths: Sequence[Path], options: EvalOptions, as_json: bool) -> int:
    """`cnnbench eval`: evaluate, print the table (or JSON) and the failures; the exit code (0: all
    evaluated; 1: some could not be; 2: none could)."""
    import sys

    from rich.console import Console

    from cnnbench.errors import print_error

    result = evaluate_runs(list(paths), options)
    if not result.results:
        if len(result.failures) == 1:
            print_error(result.failures[0][1])
        for run_dir, message in result.failures if len(result.failures) > 1 else []:
            print_error(f"{run_dir}: {message}")
        return 2
    if as_json:
        print(json.dumps([r.record() for r in result.results], indent=2))
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(eval_table(result.results, options))
        print(f"Wrote eval.json and confusion.png in {len(result.results)} run folder(s).")
    for run_dir, message in result.failures:
        print_error(f"{run_dir}: {message}")
    return 1 if result.failures else 0
