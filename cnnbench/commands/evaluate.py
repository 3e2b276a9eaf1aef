"""``cnnbench eval``: loss, error, per-class error and the confusion matrix of trained runs' weights.

``evaluate_runs(paths, EvalOptions(...)) -> EvalReport`` evaluates every run folder under ``paths`` (run
folders, sweep folders) on the run's own dataset or on another one given by data overrides, and writes,
per run, ``eval.json`` (one entry per evaluation, keyed by what was evaluated, so evaluating another split
or other weights keeps the earlier entries), ``confusion.png`` (the latest evaluation) and the same
figure to the run's TensorBoard under ``eval/confusion/<split>`` (a new event file in the run folder,
nothing purged). Nothing else in the run folder is touched.

Datasets are loaded once per distinct data section (``_DataCache``): a 16-run sweep on one dataset loads
it once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cnnbench.errors import CnnbenchError
from cnnbench.runs.files import (
    NO_ROOM,
    READ_ONLY,
    NotWritten,
    read_env,
    write_atomic,
    write_error,
    write_json_atomic,
)
from cnnbench.runs.find import find_runs
from cnnbench.runs.lock import holding, refuse_if_held
from cnnbench.runs.weights import WEIGHTS, chosen_weights

if TYPE_CHECKING:
    from cnnbench.engine.trained import TrainedRun

EVAL_NAME = "eval.json"
CONFUSION_NAME = "confusion.png"
SPLITS = ("test", "val", "train")
TTA_CHOICES = ("none", "flip")
PRECISIONS = ("run", "fp32", "bf16", "fp16")
# Data-section keys that do not change which images are loaded (the cache ignores them).
_NOT_LOADING_KEYS = {"normalize"}


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    weights: str = "last"
    tta: str = "none"
    data: dict[str, Any] = field(default_factory=dict)  # data-section overrides (parse_data_overrides)
    # run: the numerics the run's own evaluations used (its recorded fast path), so the numbers match.
    precision: str = "run"
    device: str = "auto"

    def check(self) -> None:
        for option, value, choices in (
            ("--split", self.split, SPLITS),
            ("--weights", self.weights, tuple(WEIGHTS)),
            ("--tta", self.tta, TTA_CHOICES),
            ("--precision", self.precision, PRECISIONS),
        ):
            if value not in choices:
                raise CnnbenchError(f"{option} {value!r} is not valid; use one of {', '.join(choices)}.")

    @property
    def key(self) -> str:
        """The eval.json entry this evaluation fills: another split, weights, TTA, precision or data is
        another entry; the same evaluation again replaces its entry."""
        parts = [
            f"split={self.split}",
            f"weights={self.weights}",
            f"tta={self.tta}",
            f"precision={self.precision}",
        ]
        parts += [f"data.{k}={_value_text(v)}" for k, v in sorted(self.data.items())]
        return ",".join(parts)


@dataclass
class EvalResult:
    run_dir: str
    key: str
    model: str
    depth: int
    weights: str
    checkpoint: str
    iteration: int
    max_iters: int
    complete: bool
    status: str | None  # metrics.json's status
    split: str
    tta: str
    precision: str
    data: str  # the dataset's name
    data_overrides: dict[str, Any]
    synthetic: bool
    images: int
    loss: float
    error: float
    per_class_error: list[float | None]  # None for a class with no images in the split
    confusion: list[list[int]]  # [true class][predicted class] counts
    seconds: float
    img_per_s: float
    evaluated_at: str = ""
    compiled: bool = False  # evaluated with torch.compile, as the run's own evaluations were

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    results: list[EvalResult]
    failures: list[tuple[Path, str]]  # run folder, one-paragraph message
    data_loads: int  # datasets loaded (once per distinct data section)


# ---- options ------------------------------------------------------------------------------------------


def _value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def parse_data_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["data=cifar10", "root=/x", "data.val_size=5000"]`` -> ``{"name": "cifar10", "root": "/x", ...}``.

    ``data=NAME`` (or ``name=NAME``) switches to another dataset, starting from its ``conf/data/NAME.yaml``;
    ``KEY=VALUE`` or ``data.KEY=VALUE`` sets one key of the data section. Values are read as YAML
    (``5000`` is a number, ``true`` a boolean, ``null`` None)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if key in ("data", "data.name"):
            key = "name"
        elif key.startswith("data."):
            key = key[len("data.") :]
        if not sep or not key or "." in key or "/" in key:
            raise CnnbenchError(
                f"--data {item!r} is not a data override; write KEY=VALUE with a key of the data section, "
                f"e.g. --data root=/path/to/cifar10-c, --data val_size=5000, or --data data=cifar100 to "
                f"evaluate on another dataset."
            )
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def _group_defaults(name: str) -> dict[str, Any] | None:
    import yaml

    from cnnbench.core.config import conf_dir

    path = conf_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        return None
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(loaded) if isinstance(loaded, dict) else None


def data_section(cfg: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run's data section (resolved) with ``overrides`` applied; ``name`` switches to another
    dataset's defaults. Unknown keys are refused (a typo would otherwise be ignored by the loader)."""
    from omegaconf import OmegaConf

    from cnnbench.core.config import conf_dir

    section = OmegaConf.to_container(cfg.data, resolve=True)
    name = overrides.get("name")
    if name is not None and name != section.get("name"):
        defaults = _group_defaults(str(name))
        if defaults is None:
            names = sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))
            raise CnnbenchError(f"--data data={name}: no such dataset; use one of {', '.join(names)}.")
        section = defaults
    known = set(section) | set(_group_defaults(str(section.get("name"))) or {})
    for key, value in overrides.items():
        if key == "name":
            continue
        if key not in known:
            raise CnnbenchError(
                f"--data {key}=...: the {section.get('name')} data section has no key {key!r}; its keys are "
                f"{', '.join(sorted(known))}."
            )
        section[key] = value
    return section


# ---- data, loaded once per distinct data section --------------------------------------------------------


class _DataCache:
    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.loads = 0

    def get(self, section: dict[str, Any], device: torch.device):
        from omegaconf import OmegaConf

        from cnnbench.engine.parts import load_device_data

        loading = {k: v for k, v in section.items() if k not in _NOT_LOADING_KEYS}
        key = json.dumps([loading, str(device)], sort_keys=True, default=str)
        if key not in self._data:
            self._data[key] = load_device_data(OmegaConf.create({"data": section}), device)
            self.loads += 1
        return self._data[key]


def _no_split_error(run_dir: Path, split: str, overridden: bool) -> CnnbenchError:
    how = (
        "the data overrides give no validation split (add --data val_size=N)"
        if overridden
        else "the run was trained without a validation split (data.val_size)"
    )
    return CnnbenchError(
        f"{run_dir} has no {split!r} split: {how}. Evaluate --split test or --split train instead."
    )


def _split(data: Any, split: str, run_dir: Path, overridden: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "train":
        return data.train_images, data.train_labels
    if split not in data.eval_sets:
        raise _no_split_error(run_dir, split, overridden)
    return data.eval_sets[split]


def input_shape(trained: Any) -> tuple[int, int, int] | None:
    """(C, H, W) the model was trained on, from the checkpoint's normalization: the per-pixel mean has the
    image's shape; a per-channel one gives the channels only (H and W None)."""
    mean = trained.mean
    if mean.ndim == 3:
        c, h, w = mean.shape
        return (int(c), int(h), int(w)) if h > 1 or w > 1 else (int(c), None, None)  # type: ignore[return-value]
    return None


def _check_fits(trained: Any, data: Any, images: torch.Tensor, run_dir: Path) -> None:
    problems = []
    if int(data.num_classes) != int(trained.num_classes):
        problems.append(f"{data.num_classes} classes where the model has {trained.num_classes} outputs")
    expected = input_shape(trained)
    got = tuple(int(s) for s in images.shape[1:])
    if expected is not None and any(e is not None and e != g for e, g in zip(expected, got, strict=False)):
        shape = "x".join("?" if e is None else str(e) for e in expected)
        problems.append(f"{'x'.join(map(str, got))} images where the model was trained on {shape}")
    if problems:
        raise CnnbenchError(
            f"The data {data.name!r} does not fit the model of {run_dir}: {' and '.join(problems)}. A data "
            f"override must keep the run's classes and image size (e.g. another copy, or a corrupted "
            f"version, of the dataset it was trained on). Nothing was written."
        )


# ---- the evaluation loop ---------------------------------------------------------------------------


@torch.inference_mode()
def evaluate_batches(
    model: torch.nn.Module,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int,
    autocast: Callable[[], Any],
    memory_format: torch.memory_format = torch.contiguous_format,
    tta: str = "none",
) -> tuple[float, torch.Tensor]:
    """Mean loss and the (true, predicted) confusion counts of ``model`` (eval mode) on uint8 ``images``.

    The same arithmetic as training's evaluation (``cnnbench.engine.step.evaluate``): fp32 logits, the
    cross-entropy summed in float64, read once at the end. ``tta="flip"``: the softmax is averaged over
    the image and its horizontal mirror (mirrored after normalization, as training's flip augmentation
    does), and the loss is the negative log of that averaged probability."""
    device = images.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        x = normalize(xb).contiguous(memory_format=memory_format)
        with autocast():
            logits = model(x)
        logits = logits.float()
        if tta == "flip":
            with autocast():
                mirrored = model(x.flip(3).contiguous(memory_format=memory_format))
            log_probs = torch.stack([logits.log_softmax(1), mirrored.float().log_softmax(1)])
            log_probs = log_probs.logsumexp(0) - math.log(2.0)
            loss_sum += F.nll_loss(log_probs, yb, reduction="sum").double()
            predicted = log_probs.argmax(1)
        else:
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            predicted = logits.argmax(1)
        confusion += torch.bincount(yb * num_classes + predicted, minlength=num_classes * num_classes)
    n = max(len(labels), 1)
    return loss_sum.item() / n, confusion.view(num_classes, num_classes).cpu()


def per_class_error(confusion: torch.Tensor) -> list[float | None]:
    totals = confusion.sum(1)
    correct = confusion.diagonal()
    return [None if int(t) == 0 else 1.0 - int(c) / int(t) for c, t in zip(correct, totals, strict=True)]


def _check_writable_eval_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / EVAL_NAME
    if not path.exists():
        return {"entries": {}}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CnnbenchError(
            f"{path} exists but cannot be read ({exc}); cnnbench eval adds its results to it and will not "
            f"overwrite earlier ones. Move the file away and evaluate again."
        ) from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("entries"), dict):
        raise CnnbenchError(
            f"{path} is not an eval.json written by cnnbench eval (no 'entries' mapping); move it away and "
            f"evaluate again."
        )
    return loaded


def run_numerics(trained: TrainedRun) -> tuple[str, bool]:
    """The precision and memory layout the run's own evaluations used: what its fast path resolved to
    (``auto`` measured per machine), as the checkpoint (older runs: env.json) recorded it. BatchNorm needs
    nothing more: evaluation runs it in eval mode (running statistics), ghost or not."""
    from cnnbench.engine.state import recorded_fast_path

    record = recorded_fast_path(trained.checkpoint, read_env(trained.run_dir))
    return str(record.get("precision", "fp32")), bool(record.get("channels_last", False))


def run_compile_mode(record: dict[str, Any], state_key: str = "model") -> str | None:
    """The torch.compile mode the run's own evaluations of these weights used, or None (eager): a compiled
    run evaluates its weights through the compiled model, and its moving average (``ema``) eagerly
    (cnnbench.engine.step.evaluate). Compiled code sums in another order than eager code, so evaluating
    the same way is what reproduces the logged test error."""
    from cnnbench.fastpath.choice import RECORDED_COMPILE_MODE

    if not record.get("compile") or state_key != "model":
        return None
    return str(record.get("compile_mode") or RECORDED_COMPILE_MODE)


def _compile_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.compile failing (no C++ compiler, an unsupported operation), not the model."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def evaluate_run(run_dir: Path, options: EvalOptions, cache: _DataCache) -> EvalResult:
    """Evaluate one run folder (nothing written; ``write_outputs`` does that)."""
    from datetime import datetime, timezone

    from cnnbench.core.device import autocast, resolve_precision
    from cnnbench.engine.trained import load_trained

    weights = chosen_weights(run_dir, options.weights)
    _check_writable_eval_json(run_dir)
    trained = load_trained(
        run_dir, device=options.device, checkpoint_name=weights.checkpoint_name, state_key=weights.state_key
    )
    cfg = trained.cfg
    section = data_section(cfg, options.data)
    if options.split == "val" and not section.get("val_size"):
        raise _no_split_error(run_dir, "val", bool(options.data))
    try:
        data = cache.get(section, trained.device)
    except OSError as exc:
        if exc.errno not in NO_ROOM | READ_ONLY:
            raise
        # A dataset that must be downloaded into a data root that cannot take it.
        raise write_error(
            Path(exc.filename or str(section.get("root"))),
            exc,
            "Nothing was evaluated.",
            "Make that folder writable by this user, or pass --data root=... with a folder that holds the "
            "dataset (or that can take its download).",
        ) from None
    images, labels = _split(data, options.split, run_dir, bool(options.data))
    _check_fits(trained, data, images, run_dir)
    run_precision, channels_last = run_numerics(trained)
    precision = run_precision if options.precision == "run" else options.precision
    precision = resolve_precision(precision, trained.device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = trained.model.to(memory_format=memory_format)
    from cnnbench.engine.state import recorded_fast_path

    mode = run_compile_mode(recorded_fast_path(trained.checkpoint, read_env(run_dir)), weights.state_key)
    batch_size = int(cfg.trainer.get("eval_batch_size", 1000))

    def evaluate_with(forward: torch.nn.Module, some: slice = slice(None)) -> tuple[float, torch.Tensor]:
        return evaluate_batches(
            forward,
            trained.normalize,
            images[some],
            labels[some],
            trained.num_classes,
            batch_size,
            autocast(trained.device, precision),
            memory_format,
            options.tta,
        )

    forward = model
    try:
        if mode is not None:
            forward = torch.compile(model) if mode == "default" else torch.compile(model, mode=mode)
            try:
                evaluate_with(forward, slice(batch_size))  # compiles, outside the timed pass
            except Exception as exc:
                if not _compile_failed(exc):
                    raise
                _warn(
                    f"{run_dir}: the run's evaluations were compiled, but compiling failed here "
                    f"({str(exc).splitlines()[0][:200]}); evaluated eagerly, so the numbers may differ from "
                    f"the run's logged ones in the last digits."
                )
                forward, mode = model, None
        start = time.perf_counter()
        loss, confusion = evaluate_with(forward)
    except RuntimeError as exc:  # a shape the layers cannot take
        raise CnnbenchError(
            f"The model of {run_dir} cannot take the {data.name} images ({str(exc).splitlines()[0][:200]}). "
            f"A data override must keep the image size the run was trained on. Nothing was written."
        ) from None
    seconds = time.perf_counter() - start
    n = len(labels)
    errors = n - int(confusion.diagonal().sum())
    return EvalResult(
        run_dir=str(run_dir),
        key=options.key,
        model=str(cfg.model.name),
        depth=int(cfg.depth),
        weights=weights.name,
        checkpoint=weights.checkpoint_name,
        iteration=trained.iteration,
        max_iters=int(cfg.trainer.max_iters),
        complete=trained.complete,
        status=trained.metrics.get("status"),
        split=options.split,
        tta=options.tta,
        precision=precision,
        data=str(data.name),
        data_overrides=dict(options.data),
        synthetic=bool(data.synthetic),
        images=n,
        loss=loss,
        error=errors / n if n else math.nan,
        per_class_error=per_class_error(confusion),
        confusion=confusion.tolist(),
        seconds=seconds,
        img_per_s=n * (2 if options.tta == "flip" else 1) / max(seconds, 1e-9),
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        compiled=mode is not None,
    )


# ---- outputs -----------------------------------------------------------------------------------------


def confusion_figure(result: EvalResult):
    """The confusion matrix as a matplotlib Figure (Agg canvas, no pyplot): rows true, columns predicted,
    coloured by the fraction of each true class, counts written in when there are at most 20 classes."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.array(result.confusion, dtype=np.int64)
    k = counts.shape[0]
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(4.0 + 0.35 * k, 14.0)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    what = f"{result.split}, {result.weights} weights (iteration {result.iteration:,})"
    if result.tta != "none":
        what += f", TTA {result.tta}"
    data = result.data + (
        " " + " ".join(f"{k}={_value_text(v)}" for k, v in result.data_overrides.items())
        if result.data_overrides
        else ""
    )
    ax.set_title(
        f"{result.model}-{result.depth} on {data}\n{what}: error {100 * result.error:.2f}%", fontsize=9
    )
    fig.tight_layout()
    return fig


def write_outputs(result: EvalResult) -> None:
    """eval.json (this entry added or replaced), confusion.png and the TensorBoard figure, each written
    whole or not at all. A file that cannot be written raises the one-paragraph error: ``NotWritten``
    (exit 75) for a full disk, exit 2 for a folder this user cannot write into."""
    import numpy as np

    run_dir = Path(result.run_dir)
    record = _check_writable_eval_json(run_dir)
    record["entries"][result.key] = result.record()
    path = run_dir / EVAL_NAME
    try:
        write_json_atomic(path, record)
        fig = confusion_figure(result)
        path = run_dir / CONFUSION_NAME
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        path = run_dir / "events.out.tfevents.*.eval"
        _write_figure_event(run_dir, f"eval/confusion/{result.split}", rgb, result.iteration)
    except OSError as exc:
        written = "; the files before it are written" if path.name != EVAL_NAME else ""
        raise write_error(
            path,
            exc,
            f"The evaluation is done but its results are not all in the run folder{written}; no file was "
            f"left half-written.",
            f"cnnbench eval writes its results into the run folder: make {run_dir} writable by this user, "
            f"or evaluate a copy of the run.",
        ) from None


def _write_figure_event(run_dir: Path, tag: str, rgb: Any, step: int) -> None:
    """The figure as a new event file in the run folder, no purge_step: training's scalars stay as they
    are. Written in a hidden folder beside and moved in whole, so that a failed write (a full disk) leaves
    no partial event file for TensorBoard to read."""
    import shutil
    import tempfile

    from torch.utils.tensorboard import SummaryWriter

    from cnnbench.runs.tb import quiet_writer_threads

    quiet_writer_threads()
    folder = Path(tempfile.mkdtemp(prefix=".eval-", dir=run_dir))
    try:
        writer = SummaryWriter(log_dir=str(folder), filename_suffix=".eval")
        try:
            writer.add_image(tag, rgb, global_step=step, dataformats="HWC")
        finally:
            writer.close()
        for event_file in folder.iterdir():
            event_file.replace(run_dir / event_file.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- many runs -----------------------------------------------------------------------------------------


def evaluate_runs(paths: Sequence[Path], options: EvalOptions, write: bool = True) -> EvalReport:
    """Evaluate every run under ``paths``; a run that cannot be evaluated becomes a failure (its message),
    the others go on. Raises ``CnnbenchError`` for bad options or paths (before anything is evaluated)."""
    options.check()
    run_dirs = find_runs(paths, "eval")
    cache = _DataCache()
    results, failures = [], []
    for run_dir in run_dirs:
        try:
            # One process at a time writes into a run folder: a folder being trained is refused before
            # the work (a peek, which creates nothing: a refused eval leaves the folder as it was), and
            # the lock is held while the results are written.
            if write:
                refuse_if_held(run_dir)
            result = evaluate_run(run_dir, options, cache)
            if write:
                with holding(run_dir, "eval"):
                    write_outputs(result)
        except NotWritten:
            raise  # a full disk: the next runs' results would find no room either; the same command later
        except CnnbenchError as exc:
            failures.append((run_dir, str(exc)))
            continue
        results.append(result)
    return EvalReport(results=results, failures=failures, data_loads=cache.loads)


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
        what += ", data " + " ".join(f"{k}={_value_text(v)}" for k, v in options.data.items())
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
