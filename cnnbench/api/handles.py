"""Handles on run and sweep folders for Python: ``Run``, ``Sweep`` and ``load``. They read the folders' files
and never change them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import CHECKPOINT_NAME, METRICS_NAME, MULTIRUN_RECORD, SAVED_CONFIG, read_metrics
from cnnbench.rundir.find import is_run, is_sweep, runs_under

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig


CURVE_TAGS = ("error/train", "error/test", "loss/train", "loss/test", "lr")


@dataclass(frozen=True)
class Run:
    """One run folder (made by ``train``, a sweep, or the CLI). Reads its files; never changes them."""

    path: Path

    @property
    def config(self) -> DictConfig:
        """The composed config the run trained with (``.hydra/config.yaml``)."""
        from omegaconf import OmegaConf

        return OmegaConf.load(self.path / SAVED_CONFIG)

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: status, iteration, final errors and losses (fractions), params, attempts."""
        return read_metrics(self.path) or {}

    @property
    def status(self) -> str | None:
        """``running``, ``completed``, ``interrupted``, ``diverged`` or ``failed`` (None: never started)."""
        return self.metrics.get("status")

    def history(self, tags: Iterable[str] = CURVE_TAGS) -> dict[str, list[tuple[int, float]]]:
        """The logged scalars per TensorBoard tag, as (iteration, value) pairs. A tag ending in ``/``
        stands for all under it: ``run.history(["grad_norm/stage/"])`` is the gradient flow per stage."""
        from cnnbench.reporting.runs import read_curves

        return {
            tag: [(int(s), float(v)) for s, v in zip(curve.steps, curve.values, strict=True)]
            for tag, curve in read_curves(self.path, tuple(tags)).items()
        }

    def model(self, device: str = "cpu", weights: str = "last") -> torch.nn.Module:
        """The trained network (eval mode) on ``device``; ``weights``: last, best (best.pt) or ema."""
        from cnnbench.commands.trained_model import trained_model

        return trained_model(self.path, device=device, weights=weights)

    def __repr__(self) -> str:
        m = self.metrics
        error = m.get("test_error")
        shown = f", test_error={error:.4f}" if isinstance(error, float) else ""
        return f"Run('{self.path}', status={m.get('status')!r}, iteration={m.get('iteration')}{shown})"


@dataclass(frozen=True)
class Sweep:
    """A multirun folder; iterating gives its runs (its job folders, nested or not), in folder order."""

    path: Path

    @property
    def runs(self) -> list[Run]:
        return [Run(p) for p in runs_under(self.path)]

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int | slice) -> Run | list[Run]:
        """Runs in folder order (depth=20,model=plain < depth=20,model=resnet < depth=56,...)."""
        return self.runs[index]

    def __repr__(self) -> str:
        return f"Sweep('{self.path}', runs={len(self)})"


RunsLike = Run | Sweep | str | Path | Iterable[Run | Sweep | str | Path]


def load(path: str | Path) -> Run | Sweep:
    """Open a run folder or a sweep (multirun) folder, also one the CLI made."""
    folder = Path(path)
    if is_sweep(folder):
        return Sweep(folder)
    if is_run(folder):
        return Run(folder)
    raise CnnbenchError(
        f"{folder} is neither a run folder (with {METRICS_NAME}, {CHECKPOINT_NAME} or {SAVED_CONFIG}) nor a "
        f"sweep folder (with {MULTIRUN_RECORD}). Give cnnbench.load a folder under outputs/ that "
        f"`cnnbench status` lists."
    )


def given_items(runs: RunsLike) -> list[Run | Sweep | str | Path]:
    return [runs] if isinstance(runs, (Run, Sweep, str, Path)) else list(runs)


def run_folders(runs: RunsLike) -> list[Path]:
    """Run folders, in the order given; a sweep (object or folder) stands for its runs."""
    folders: list[Path] = []
    for item in given_items(runs):
        opened = load(item) if isinstance(item, (str, Path)) else item
        folders += [r.path for r in opened] if isinstance(opened, Sweep) else [opened.path]
    return folders
