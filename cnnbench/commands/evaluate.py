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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnbench.commands.eval_files import check_writable_eval_json, write_outputs
from cnnbench.commands.eval_options import NOT_LOADING_KEYS, EvalOptions, EvalReport, EvalResult, data_section
from cnnbench.core.compiling import compile_module
from cnnbench.engine.evaluation import Evaluated, evaluate_images
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import (
    NO_ROOM,
    READ_ONLY,
    NotWritten,
    read_env,
    write_error,
)
from cnnbench.rundir.find import find_runs
from cnnbench.rundir.lock import holding, refuse_if_held
from cnnbench.rundir.weights import chosen_weights

if TYPE_CHECKING:
    from cnnbench.engine.trained import TrainedRun

# ---- data, loaded once per distinct data section --------------------------------------------------------


class _DataCache:
    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.loads = 0

    def get(self, section: dict[str, Any], device: torch.device):
        from omegaconf import OmegaConf

        from cnnbench.engine.parts import load_device_data

        loading = {k: v for k, v in section.items() if k not in NOT_LOADING_KEYS}
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


def per_class_error(confusion: torch.Tensor) -> list[float | None]:
    totals = confusion.sum(1)
    correct = confusion.diagonal()
    return [None if int(t) == 0 else 1.0 - int(c) / int(t) for c, t in zip(correct, totals, strict=True)]


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
    check_writable_eval_json(run_dir)
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

    def evaluate_with(forward: torch.nn.Module, some: slice = slice(None)) -> Evaluated:
        return evaluate_images(
            forward,
            lambda xb: trained.normalize(xb).contiguous(memory_format=memory_format),
            images[some],
            labels[some],
            batch_size,
            autocast(trained.device, precision),
            memory_format=memory_format,
            tta=options.tta,
            num_classes=trained.num_classes,
        )

    forward = model
    try:
        if mode is not None:
            forward = compile_module(model, mode)
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
        evaluated = evaluate_with(forward)
    except RuntimeError as exc:  # a shape the layers cannot take
        raise CnnbenchError(
            f"The model of {run_dir} cannot take the {data.name} images ({str(exc).splitlines()[0][:200]}). "
            f"A data override must keep the image size the run was trained on. Nothing was written."
        ) from None
    seconds = time.perf_counter() - start
    n, confusion = len(labels), evaluated.confusion
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
        loss=evaluated.loss,
        error=evaluated.error if n else math.nan,
        per_class_error=per_class_error(confusion),
        confusion=confusion.tolist(),
        seconds=seconds,
        img_per_s=n * (2 if options.tta == "flip" else 1) / max(seconds, 1e-9),
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        compiled=mode is not None,
    )


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
