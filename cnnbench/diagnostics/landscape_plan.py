"""``cnnbench landscape``'s plan: the settings checked and the runs loaded, before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnbench.diagnostics.runs import Compared, load_compared, output_folder
from cnnbench.errors import CnnbenchError

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
    runs = load_compared(run_dirs, device, "cnnbench landscape")
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
