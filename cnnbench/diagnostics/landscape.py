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
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.linalg import vector_norm

from cnnbench.diagnostics.runs import Compared, load_runs, output_folder, prepare_output
from cnnbench.errors import CnnbenchError

CSV_NAME, JSON_NAME, PNG_NAME = "landscape.csv", "landscape.json", "landscape.png"
CSV_COLUMNS = ("run", "i", "j", "alpha", "beta", "loss", "error")
DEFAULT_SAMPLES = 2048
YES_ABOVE = 10_000  # grid points (passes over the subset) of all runs together that need --yes
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Settings:
    dims: int
    resolution: int
    span: float
    samples: int
    seed: int
    precision: str

    def coords(self) -> list[float]:
        # Symmetric and exact: the middle point of an odd resolution is 0.0 (linspace can give -5.6e-17).
        r = self.resolution - 1
        return [self.span * (2 * k - r) / r for k in range(r + 1)]

    def points(self) -> list[tuple[int, int]]:
        """Grid indices ``(i, j)`` in evaluation order (``j`` is 0 in 1-D)."""
        r = self.resolution
        return [(i, j) for i in range(r) for j in range(r if self.dims == 2 else 1)]


def check_settings(dims: int, resolution: int, span: float, samples: int | None, precision: str) -> None:
    problems = []
    if dims not in (1, 2):
        problems.append(f"--dims {dims} must be 1 (a curve) or 2 (a surface)")
    if resolution < 2:
        problems.append(f"--resolution {resolution} must be at least 2 points per axis (e.g. 21 or 51)")
    if not span > 0:
        problems.append(f"--span {span} must be positive (e.g. 1.0: from -1 to 1 times the direction)")
    if samples is not None and samples < 1:
        problems.append(f"--samples {samples} must be at least 1")
    if precision not in PRECISIONS:
        problems.append(f"--precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    if problems:
        raise CnnbenchError("; ".join(problems) + ". Nothing was written.")


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One random direction, a tensor per parameter of ``model``, filter-normalized (module docstring)."""
    direction = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            direction.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device, w.dtype)
        dims = tuple(range(1, w.dim()))
        d = d * (vector_norm(w, dim=dims, keepdim=True) / (vector_norm(d, dim=dims, keepdim=True) + 1e-10))
        direction.append(d)
    return direction


def directions(model: nn.Module, dims: int, seed: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [filter_normalized_direction(model, generator) for _ in range(dims)]


def training_subset(run, images: torch.Tensor, labels: torch.Tensor, samples: int, seed: int):
    """``samples`` of the training images drawn with ``seed`` (sorted), normalized, channels-last; labels."""
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    index = index.to(labels.device)
    x = run.normalize(images[index]).contiguous(memory_format=torch.channels_last)
    return x, labels[index]


class PointEvaluator:
    """Loss and error of ``model`` at ``w + a*d1 (+ b*d2)`` on fixed inputs; ``restore`` puts ``w`` back."""

    def __init__(
        self,
        model: nn.Module,
        dirs: Sequence[Sequence[torch.Tensor]],
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        precision: str = "fp32",
    ) -> None:
        self.model = model.eval()
        self.params = list(model.parameters())
        self.base = [p.detach().clone() for p in self.params]
        self.dirs = dirs
        self.inputs, self.labels = inputs, labels
        self.batch_size = batch_size
        self.precision = precision

    def _autocast(self):
        import contextlib

        if self.precision == "bf16":
            return torch.autocast(self.inputs.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def set_point(self, coords: Sequence[float]) -> None:
        for k, (p, w) in enumerate(zip(self.params, self.base, strict=True)):
            p.copy_(w)
            for d, c in zip(self.dirs, coords, strict=False):
                if c != 0.0:
                    p.add_(d[k], alpha=c)

    @torch.no_grad()
    def __call__(self, coords: Sequence[float], limit: int | None = None) -> tuple[float, float]:
        """Mean loss and error at ``coords`` (over the first ``limit`` samples when given)."""
        self.set_point(coords)
        inputs, labels = self.inputs[:limit], self.labels[:limit]
        loss = torch.zeros((), dtype=torch.float64, device=inputs.device)
        errors = torch.zeros((), dtype=torch.long, device=inputs.device)
        for xb, yb in zip(inputs.split(self.batch_size), labels.split(self.batch_size), strict=True):
            with self._autocast():
                logits = self.model(xb)
            loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            errors += (logits.argmax(1) != yb).sum()
        return loss.item() / len(labels), errors.item() / len(labels)

    def restore(self) -> None:
        self.set_point(())


def evaluate_point(evaluator: PointEvaluator, coords: Sequence[float]) -> tuple[float, float]:
    """One grid point (a seam for tests that interrupt the loop)."""
    return evaluator(coords)


@dataclass
class Plan:
    settings: Settings
    runs: list[Compared]
    out: Path
    data: list  # per run: its DeviceData (loaded once)

    @property
    def total_points(self) -> int:
        return len(self.settings.points()) * len(self.runs)

    def record(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "runs": [
                {"label": c.label, "run_dir": str(c.run.run_dir.resolve()), "iteration": c.run.iteration}
                for c in self.runs
            ],
        }


def plan(
    run_dirs: Sequence[Path],
    dims: int = 1,
    resolution: int = 51,
    span: float = 1.0,
    samples: int | None = None,
    out: Path | None = None,
    seed: int = 0,
    precision: str = "fp32",
    yes: bool = False,
    device: str = "auto",
) -> Plan:
    """Check everything and load the runs; writes nothing (every refusal happens here)."""
    check_settings(dims, resolution, span, samples, precision)
    points = resolution**dims * len(run_dirs)
    if points > YES_ABOVE and not yes:
        raise CnnbenchError(
            f"This landscape is {points:,} grid points ({resolution}^{dims} x {len(run_dirs)} run(s)), "
            f"each a forward pass over the sample of training images: hours on a CPU. Add --yes to run it "
            f"anyway, or lower --resolution (21 or 51 show the shape). Nothing was written."
        )
    runs = load_runs(run_dirs, device, "cnnbench landscape")
    datas = [c.run.load_data() for c in runs]
    sizes = [len(d.train_labels) for d in datas]
    n = min(DEFAULT_SAMPLES, min(sizes)) if samples is None else samples
    for c, size in zip(runs, sizes, strict=True):
        if n > size:
            raise CnnbenchError(
                f"--samples {n} is more than the {size} training images of {c.run.run_dir} "
                f"({c.run.cfg.data.name}). Use --samples {size} or fewer. Nothing was written."
            )
    settings = Settings(dims, resolution, float(span), n, seed, precision)
    return Plan(settings, runs, output_folder(run_dirs, out), datas)


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
    return _read_rows(csv_path)


def _read_rows(path: Path) -> dict[tuple[str, int, int], dict]:
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
    return [{k: types.get(k, float)(v) for k, v in row.items()} for row in _read_rows(path).values()]


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
            with stop, open(csv_path, "a", newline="", encoding="utf-8") as f, _bar(console) as bar:
                writer = csv.writer(f)
                task = bar.add_task("landscape", total=passes)
                for n, (c, i, j) in enumerate(todo):
                    evaluator = evaluators.get(c.label)
                    if evaluator is None:
                        for other in evaluators.values():  # one run's weights moved at a time
                            other.restore()
                        data = plan_.data[plan_.runs.index(c)]
                        evaluator = evaluators[c.label] = _evaluator(c, data, s)
                        if n == 0:
                            _print_estimate(console, evaluator, passes, s)
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
    rows = _read_rows(csv_path)
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
        result.png = _draw(plan_, result.surfaces, tensorboard)
    return result


def _evaluator(c: Compared, data, s: Settings) -> PointEvaluator:
    x, y = training_subset(c.run, data.train_images, data.train_labels, s.samples, s.seed)
    model = c.run.model.to(memory_format=torch.channels_last)
    dirs = directions(model, s.dims, s.seed)
    batch = int(c.run.cfg.trainer.get("eval_batch_size", 1000))
    return PointEvaluator(model, dirs, x, y, batch, s.precision)


def _print_estimate(console, evaluator: PointEvaluator, passes: int, s: Settings) -> None:
    """Time one batch at the trained weights and extrapolate to every pass."""
    n = min(len(evaluator.labels), 256)
    evaluator((), limit=min(n, 32))  # warm-up
    started = time.perf_counter()
    evaluator((), limit=n)
    rate = n / max(time.perf_counter() - started, 1e-9)
    console.print(
        f"Estimate: ~{rate:,.0f} img/s here, so about {_duration(passes * s.samples / rate)} in all.",
        highlight=False,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points, ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def surfaces(plan_: Plan, rows: dict) -> list[tuple[str, list[float], torch.Tensor, torch.Tensor]]:
    """Per run: (label, coords, loss grid, error grid); grids (resolution,) in 1-D, (res, res) in 2-D."""
    s = plan_.settings
    shape = (s.resolution, s.resolution) if s.dims == 2 else (s.resolution,)
    result = []
    for c in plan_.runs:
        loss, error = torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)
        for i, j in s.points():
            row = rows[(c.label, i, j)]
            index = (i, j) if s.dims == 2 else (i,)
            loss[index], error[index] = float(row["loss"]), float(row["error"])
        result.append((c.label, s.coords(), loss, error))
    return result


def _draw(plan_: Plan, data: list, tensorboard: bool) -> Path:
    from cnnbench.diagnostics.figures import landscape_figure, save_figure

    png = plan_.out / PNG_NAME
    save_figure(landscape_figure(data, plan_.settings), png)
    if tensorboard:
        for c, one in zip(plan_.runs, data, strict=True):
            log_figure(
                c.run.run_dir,
                f"landscape/{plan_.settings.dims}d",
                landscape_figure([one], plan_.settings),
                c.run.iteration,
            )
    return png


def log_figure(run_dir: Path, tag: str, figure, step: int) -> None:
    """Add ``figure`` to the run's TensorBoard, in an events file of its own (training's are untouched)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir), filename_suffix=".landscape")
    try:
        writer.add_figure(tag, figure, global_step=step, close=False)  # not a pyplot figure
    finally:
        writer.close()


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
