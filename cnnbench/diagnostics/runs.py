"""Runs loaded for one comparison: unique labels, one dataset, and where the outputs go."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnbench.engine.trained import TrainedRun, load_trained
from cnnbench.errors import CnnbenchError


@dataclass(eq=False)
class Compared:
    label: str  # e.g. "plain-56"; unique within the comparison
    run: TrainedRun


def _base_label(run: TrainedRun) -> str:
    return f"{run.cfg.model.name}-{int(run.cfg.depth)}"


def load_compared(
    run_dirs: Sequence[Path], device: str = "auto", command: str = "cnnbench analyze"
) -> list[Compared]:
    """Load every run (a CnnbenchError names a folder that is not a run, has no or a corrupt checkpoint),
    check that they share one dataset, and label them ``<model>-<depth>`` (+ seed or folder if needed)."""
    if not run_dirs:
        raise CnnbenchError(f"Give {command} at least one run folder (written by `cnnbench train`).")
    seen: set[Path] = set()
    runs: list[TrainedRun] = []
    for run_dir in run_dirs:
        key = Path(run_dir).resolve()
        if key in seen:
            raise CnnbenchError(f"{run_dir} is given twice; give each run folder once to {command}.")
        seen.add(key)
        runs.append(load_trained(Path(run_dir), device=device))
    datasets = {str(r.cfg.data.name) for r in runs}
    if len(datasets) > 1:
        listing = ", ".join(f"{r.run_dir} ({r.cfg.data.name})" for r in runs)
        raise CnnbenchError(
            f"{command} compares runs on one dataset, but these runs were trained on different data: "
            f"{listing}. Run it separately for each dataset. Nothing was written."
        )
    labels = [_base_label(r) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} seed {int(r.cfg.seed)}" for label, r in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        counts = Counter(labels)
        labels = [
            f"{label} ({r.run_dir.name})" if counts[label] > 1 else label
            for label, r in zip(labels, runs, strict=True)
        ]
    return [Compared(label, r) for label, r in zip(labels, runs, strict=True)]


def output_folder(run_dirs: Sequence[Path], out: Path | None) -> Path:
    """``--out``, else the run folder for one run, else the current folder."""
    if out is not None:
        return Path(out)
    return Path(run_dirs[0]) if len(run_dirs) == 1 else Path.cwd()


def prepare_output(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CnnbenchError(
            f"Cannot write into {out}: it is a file, not a folder. Pass --out with a folder."
        ) from None
    except OSError as exc:
        raise CnnbenchError(
            f"Cannot create {out} ({exc.strerror}). Pass --out with a writable folder."
        ) from None
