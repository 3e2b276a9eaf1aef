"""``cnnbench export``: a trained run's network alone, loadable without cnnbench.

Formats:

- ``torchscript`` (``model.ts.pt``): the network in eval mode with the run's input normalization baked in
  (``NormalizedModel``), traced on an example batch of the run's image size. Load it with
  ``torch.jit.load(path)``; it takes float RGB images in [0, 1], shape (N, 3, H, W) (NCHW, the run's
  image size: 32x32 for every cnnbench dataset), i.e. ``uint8_images.float() / 255``, and returns the
  logits (N, num_classes).
- ``onnx`` (``model.onnx``): the same module, same input (named ``images``, batch dimension dynamic) and
  output (``logits``). Needs ``pip install cnnbench[onnx]``.
- ``state_dict`` (``state_dict.pt``): the bare network's weights as a plain dict of tensors (no
  normalization); rebuild the architecture from the sidecar JSON (``build_model(model, depth,
  num_classes, **options)``) and normalize inputs yourself with its ``normalization``.

Every format gets a sidecar ``<file>.json``: architecture, number of classes, the input it takes, the
normalization, and where the weights came from. Files go into ``RUN_DIR/export/`` by default and are
never overwritten without ``force``. Nothing the training wrote is changed.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnbench.commands.choices import EXPORT_FORMATS
from cnnbench.commands.evaluate import input_shape
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import discard, os_error_of, write_error
from cnnbench.rundir.lock import holding
from cnnbench.rundir.weights import check_weights_name, chosen_weights

_DEFAULT_NAMES = {"torchscript": "model.ts.pt", "onnx": "model.onnx", "state_dict": "state_dict.pt"}
EXPORT_DIR = "export"
INPUT_DOC = (
    "float32 RGB images in [0, 1] (uint8 pixels / 255), shape (N, 3, H, W) NCHW; returns logits (N, C)"
)


class NormalizedModel(torch.nn.Module):
    """The trained network with its input normalization: ``forward(x)`` takes float images in [0, 1],
    (N, 3, H, W), and returns logits. ``mean``/``std`` are the run's (per-pixel mean, std 1 for the
    paper's normalization)."""

    def __init__(self, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    weights: str
    iteration: int
    complete: bool
    input_shape: tuple[int, int, int]


def default_path(run_dir: Path, fmt: str, weights: str) -> Path:
    name = _DEFAULT_NAMES[fmt]
    if weights != "last":
        stem, _, rest = name.partition(".")
        name = f"{stem}-{weights}.{rest}"
    return run_dir / EXPORT_DIR / name


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _check_target(run_dir: Path, path: Path, force: bool) -> None:
    """Never a file training wrote (even with --force); never an existing file without --force."""
    from cnnbench.rundir.files import (
        BEST_CHECKPOINT_NAME,
        CHECKPOINT_NAME,
        ENV_NAME,
        LOCK_NAME,
        LOG_NAME,
        METRICS_NAME,
    )

    run_files = {CHECKPOINT_NAME, BEST_CHECKPOINT_NAME, METRICS_NAME, ENV_NAME, LOG_NAME, LOCK_NAME}
    for target in (path, _sidecar(path)):
        resolved = target.resolve()
        in_run = resolved.parent == run_dir.resolve()
        if (in_run and (target.name in run_files or target.name.startswith("events.out.tfevents"))) or (
            run_dir.resolve() / ".hydra" in resolved.parents
        ):
            raise CnnbenchError(
                f"--out {path} would overwrite {target}, which the training wrote; choose another path."
            )
        if target.is_dir():
            raise CnnbenchError(f"--out {path}: {target} is a folder; give a file path.")
        if target.exists() and not force:
            raise CnnbenchError(
                f"{target} already exists; cnnbench export does not overwrite it. Pass --force to replace "
                f"it, or --out to write elsewhere."
            )


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_run(
    run_dir: Path,
    fmt: str = "torchscript",
    weights: str = "last",
    out: Path | None = None,
    force: bool = False,
) -> ExportResult:
    """Export ``run_dir``'s ``weights`` (``last``: checkpoint.pt, ``best``: best.pt) as ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise CnnbenchError(f"--format {fmt!r} is not a format; use one of {', '.join(EXPORT_FORMATS)}.")
    check_weights_name(weights)
    if fmt == "onnx" and not onnx_available():
        raise CnnbenchError(
            "--format onnx needs the onnx package, which is not installed. Install it with "
            "`pip install cnnbench[onnx]` (or `pip install onnx onnxruntime`), or use --format torchscript."
        )
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnbenchError(f"{run_dir} is not a folder; give a run folder written by `cnnbench train`.")
    choice = chosen_weights(run_dir, weights)
    path = Path(out) if out is not None else default_path(run_dir, fmt, weights)
    _check_target(run_dir, path, force)
    # One process at a time writes into a run folder: an export into it (the default, RUN_DIR/export/)
    # holds the folder's lock until its files are written; one elsewhere (--out) leaves the folder alone.
    inside = run_dir.resolve() in path.resolve().parents
    with holding(run_dir, "export", enabled=inside):
        return _export(run_dir, fmt, weights, path, choice)


def _export(run_dir: Path, fmt: str, weights: str, path: Path, choice: Any) -> ExportResult:
    from cnnbench.engine.parts import model_options_of
    from cnnbench.engine.trained import load_trained

    trained = load_trained(
        run_dir, device="cpu", checkpoint_name=choice.checkpoint_name, state_key=choice.state_key
    )
    shape = input_shape(trained)
    c, h, w = (shape[0], shape[1] or 32, shape[2] or 32) if shape else (3, 32, 32)
    wrapped = NormalizedModel(trained.model, trained.mean, trained.std).eval()
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    cfg = trained.cfg
    meta: dict[str, Any] = {
        "format": fmt,
        "model": str(cfg.model.name),
        "depth": int(cfg.depth),
        "num_classes": trained.num_classes,
        "options": model_options_of(cfg),
        "input": {
            "shape": ["N", c, h, w],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW, RGB",
            "description": INPUT_DOC
            if fmt != "state_dict"
            else "normalize first: (x - mean) / std, x in [0, 1]",
        },
        "normalization": {
            "kind": str(cfg.data.get("normalize", "pixel_mean")),
            "included": fmt != "state_dict",
            "mean_shape": list(trained.mean.shape),
            "mean": trained.mean.cpu().tolist(),
            "std": trained.std.cpu().tolist(),
        },
        "weights": weights,
        "checkpoint": choice.checkpoint_name,
        "iteration": trained.iteration,
        "max_iters": int(cfg.trainer.max_iters),
        "complete": trained.complete,
        "data": str(cfg.data.name),
        "run_dir": str(run_dir),
    }
    _write_both(
        path, json.dumps(meta, indent=2) + "\n", lambda tmp: _write(fmt, wrapped, trained.model, example, tmp)
    )
    return ExportResult(
        path=path,
        sidecar=_sidecar(path),
        format=fmt,
        weights=weights,
        iteration=trained.iteration,
        complete=trained.complete,
        input_shape=(c, h, w),
    )


def _write_both(path: Path, sidecar: str, write_model: Any) -> None:
    """The model and its sidecar, each under a temporary name first, then both renamed into place: a full
    disk leaves neither half-written, and an earlier export (``--force``) as it was."""
    side = _sidecar(path)
    tmp_model = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    target = path.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = side
        tmp_side.write_text(sidecar, encoding="utf-8")
        target = path
        try:
            write_model(tmp_model)
        except RuntimeError as exc:  # torch.jit.save/torch.save report a failed write as their own error
            cause = os_error_of(exc)
            if cause is None:
                raise
            raise cause from None
        os.replace(tmp_model, path)
        os.replace(tmp_side, side)
    except OSError as exc:
        raise write_error(
            target,
            exc,
            "Nothing was exported; no file was left half-written.",
            "Pass --out with a file in a folder this user can write into (or make that folder writable).",
        ) from None
    finally:
        discard(tmp_model)
        discard(tmp_side)


def _write(
    fmt: str, wrapped: torch.nn.Module, bare: torch.nn.Module, example: torch.Tensor, path: Path
) -> None:
    with warnings.catch_warnings():
        # torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated; they still work.
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
        # Through a Python file: torch's own file writers report a failed write (a full disk) without
        # its errno; a Python file raises the OSError itself.
        with open(path, "wb") as f:
            if fmt == "torchscript":
                with torch.no_grad():
                    traced = torch.jit.trace(wrapped, example)
                torch.jit.save(traced, f)
            elif fmt == "onnx":
                with torch.no_grad():
                    torch.onnx.export(
                        wrapped,
                        (example,),
                        f,
                        input_names=["images"],
                        output_names=["logits"],
                        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                        dynamo=False,
                    )
            else:
                torch.save({k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}, f)


def export_command(
    run_dir: Path,
    fmt: str = "torchscript",
    weights: str = "last",
    out: Path | None = None,
    force: bool = False,
) -> int:
    """`cnnbench export`: export and say what was written."""
    result = export_run(run_dir, fmt=fmt, weights=weights, out=out, force=force)
    note = "" if result.complete else " (the run is incomplete: these are its weights so far)"
    print(
        f"Wrote {result.path} ({result.format}, {result.weights} weights, iteration {result.iteration:,}"
        f"){note} and {result.sidecar}."
    )
    return 0
