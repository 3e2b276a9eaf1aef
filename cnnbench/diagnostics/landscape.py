"""``cnnbench landscape``: loss surfaces along filter-normalized random directions (Li et al. 2018).

**Directions.** Gaussian, drawn on the CPU from ``torch.Generator().manual_seed(seed)`` in the order of
``model.parameters()`` (the second direction of a 2-D plot after the first), so the same command gives
the same directions on any device. Every tensor with two or more dimensions (conv and linear weights) is
filter-normalized: each output-channel slice ``d[k]`` is rescaled to the norm of the same slice of the
trained weights, ``d[k] * ||w[k]|| / (||d[k]|| + 1e-10)``. Tensors with one dimension (biases, BN
weights and biases) get a zero direction: the authors' ``--xignore biasbn``. BN running statistics are
buffers and are not moved.

**Evaluation.** At ``w + alpha * d1 (+ beta * d2)`` for ``alpha`` (and ``beta``) on ``linspace(-span,
span, resolution)``: the mean cross-entropy and the error on a fixed subset of ``samples`` training
images (drawn with ``seed``, sorted, not augmented, normalized as in training), BN in eval mode (running
statistics), channels-last, fp32 unless ``precision=bf16``. One grid point is one pass over the subset
in batches of ``trainer.eval_batch_size``.

Evaluating several grid points per batched forward (``torch.func.stack_module_state`` + ``vmap`` over
stacked perturbed weights) was measured on the 2-core CPU this project is developed on: ResNet-20, fp32,
131 point-images/s for 4 points x 250 images per vmapped forward against 276 img/s for one channels-last
forward of 1000 images (vmap turns the convs into grouped convs without the channels-last kernels). So
points are evaluated one at a time, the weights updated in place, in batches of ``eval_batch_size``.

**Files** (in ``--out``): ``landscape.csv`` (one row per finished point, appended and flushed as each
finishes: ``run, i, j, alpha, beta, loss, error``), ``landscape.json`` (the settings and runs, so the
same command continues where an interrupted one stopped, and a different one is refused), and
``landscape.png`` once every point is done. The figure of each run also goes to its TensorBoard
(``landscape/1d`` or ``landscape/2d``, at the checkpoint's iteration, in an events file of its own).

This module runs the loop over the grid; ``landscape_plan`` checks the settings and loads the runs,
``landscape_grid`` computes the directions and the points, ``landscape_files`` reads and names the
files, ``landscape_display`` shows the estimate, the progress and the figure.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnbench.diagnostics.landscape_display import draw, print_estimate, progress_bar
from cnnbench.diagnostics.landscape_files import (
    CSV_COLUMNS,
    CSV_NAME,
    JSON_NAME,
    read_done,
    read_points,
    read_rows,
)
from cnnbench.diagnostics.landscape_grid import PointEvaluator, point_evaluator, surfaces
from cnnbench.diagnostics.landscape_plan import Plan, Settings, plan
from cnnbench.diagnostics.runs import prepare_output

__all__ = ["LandscapeResult", "evaluate_point", "landscape", "plan", "read_points", "run_landscape"]


def evaluate_point(evaluator: PointEvaluator, coords: Sequence[float]) -> tuple[float, float]:
    """One grid point (a seam for tests that interrupt the loop)."""
    return evaluator(coords)


@dataclass
class LandscapeResult:
    out: Path
    csv: Path
    png: Path | None  # None until every point is done
    settings: Settings
    done: int
    total: int
    seconds: float  # wall time of this invocation's loop (data, directions, estimate included)
    images_per_s: float | None  # images / seconds spent in the grid points' forward passes
    # Per run (label, coords, loss grid, error grid), once every point is done (see ``surfaces``).
    surfaces: list[tuple[str, list[float], torch.Tensor, torch.Tensor]] | None = None

    @property
    def complete(self) -> bool:
        return self.done >= self.total


def run_landscape(
    plan_: Plan, restart: bool = False, console=None, tensorboard: bool = True
) -> LandscapeResult:
    """Evaluate every grid point not yet in the CSV, appending each; draw and log the figure when done."""
    from rich.console import Console

    from cnnbench.core.signals import GracefulStop

    console = console or Console(stderr=True)
    s = plan_.settings
    prepare_output(plan_.out)
    done = read_done(plan_, restart)
    csv_path = plan_.out / CSV_NAME
    if not csv_path.exists():
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(CSV_COLUMNS)
    (plan_.out / JSON_NAME).write_text(json.dumps(plan_.record(), indent=2) + "\n", encoding="utf-8")

    coords = s.coords()
    points = s.points()
    todo = [(c, i, j) for c in plan_.runs for i, j in points if (c.label, i, j) not in done]
    passes = len(todo)
    console.print(
        f"{plan_.total_points:,} grid points ({s.resolution}^{s.dims} x {len(plan_.runs)} run(s)), "
        f"{len(done):,} already in {csv_path}: {passes:,} forward passes over {s.samples:,} training images "
        f"= {passes * s.samples:,} images ({s.precision}).",
        highlight=False,
    )
    started = time.perf_counter()
    evaluated_images, eval_seconds = 0, 0.0
    if todo:
        evaluators: dict[str, PointEvaluator] = {}
        stop = GracefulStop()
        try:
            with stop, open(csv_path, "a", newline="", encoding="utf-8") as f, progress_bar(console) as bar:
                writer = csv.writer(f)
                task = bar.add_task("landscape", total=passes)
                for n, (c, i, j) in enumerate(todo):
                    evaluator = evaluators.get(c.label)
                    if evaluator is None:
                        for other in evaluators.values():  # one run's weights moved at a time
                            other.restore()
                        data = plan_.data[plan_.runs.index(c)]
                        evaluator = evaluators[c.label] = point_evaluator(c, data, s)
                        if n == 0:
                            print_estimate(console, evaluator, passes, s)
                    bar.update(task, description=c.label)
                    xy = (coords[i], coords[j]) if s.dims == 2 else (coords[i],)
                    tick = time.perf_counter()
                    loss, error = evaluate_point(evaluator, xy)
                    eval_seconds += time.perf_counter() - tick
                    alpha, beta = xy[0], xy[1] if s.dims == 2 else 0.0
                    writer.writerow([c.label, i, j, repr(alpha), repr(beta), repr(loss), repr(error)])
                    f.flush()
                    evaluated_images += s.samples
                    bar.advance(task)
                    if stop.signum is not None:
                        stop.announce()
                        break
        finally:
            for evaluator in evaluators.values():
                evaluator.restore()
    seconds = time.perf_counter() - started
    rows = read_rows(csv_path)
    result = LandscapeResult(
        out=plan_.out,
        csv=csv_path,
        png=None,
        settings=s,
        done=sum((c.label, i, j) in rows for c in plan_.runs for i, j in points),
        total=plan_.total_points,
        seconds=seconds,
        images_per_s=evaluated_images / eval_seconds if evaluated_images and eval_seconds > 0 else None,
    )
    if result.complete:
        result.surfaces = surfaces(plan_, rows)
        result.png = draw(plan_, result.surfaces, tensorboard)
    return result


def landscape(
    run_dirs: Sequence[Path],
    *,
    restart: bool = False,
    console=None,
    tensorboard: bool = True,
    **options,
) -> LandscapeResult:
    """Plan (all checks) and run; ``options`` are ``plan``'s keyword arguments."""
    return run_landscape(plan(run_dirs, **options), restart=restart, console=console, tensorboard=tensorboard)
