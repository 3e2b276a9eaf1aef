"""Runs -> configurations -> table rows, one row per (configuration, status)."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from cnnbench.reporting.reference import paper_reference
from cnnbench.reporting.runs import RunRecord
from cnnbench.rundir.files import STATUSES

# Figure 6 order: plain left, ResNet right, other families after them.
_FAMILY_ORDER = {"plain": 0, "resnet": 1}


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for a single value) in percent."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, fractions: list[float | None]) -> Stat:
        values = [100.0 * v for v in fractions if v is not None]
        if not values:
            return cls(None, None, 0)
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def text(self) -> str:
        if self.mean is None:
            return "—"
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Row:
    """Runs of one configuration that share one status."""

    data: str
    augment: str | None
    model: str
    depth: int | None
    options: dict[str, Any]  # model options plus the settings that tell this configuration from its siblings
    status: str
    config_status: str  # all runs of the configuration, e.g. "2 completed, 1 diverged"
    runs: list[RunRecord]
    paper: dict[str, Any] | None = None
    all_runs: list[RunRecord] = field(default_factory=list)  # every run of the configuration, any status
    train_error: Stat = field(init=False)
    test_error: Stat = field(init=False)
    # Test error of the weights with the best validation error (runs with data.val_size): selected without
    # looking at the test set, unlike best_test_error.
    test_error_at_best_val: Stat = field(init=False)

    def __post_init__(self) -> None:
        self.train_error = Stat.of([r.train_error for r in self.runs])
        self.test_error = Stat.of([r.test_error for r in self.runs])
        self.test_error_at_best_val = Stat.of([r.test_error_at_best_val for r in self.runs])

    @property
    def name(self) -> str:
        """Legend/table label, e.g. "plain-20" or "resnet-56 shortcut=B"."""
        base = f"{self.model}-{self.depth}" if self.depth is not None else self.model
        return f"{base} {self.options_text}".strip()

    @property
    def options_text(self) -> str:
        # Model options first, then the other settings (dotted: optimizer.lr, trainer.max_iters).
        keys = sorted(self.options, key=lambda k: ("." in k, k))
        return ", ".join(f"{k}={value_text(self.options[k])}" for k in keys)

    @property
    def seeds(self) -> list[int | None]:
        return sorted((r.seed for r in self.runs), key=lambda s: (s is None, s or 0))

    @property
    def best_test_error(self) -> float | None:
        """Lowest test error any seed reached at an evaluation, in percent (optimistic: picked on test)."""
        best = [r.best_test_error for r in self.runs if r.best_test_error is not None]
        return 100.0 * min(best) if best else None

    @property
    def params(self) -> int | None:
        values = {r.params for r in self.runs if r.params is not None}
        return max(values) if values else None

    @property
    def iteration(self) -> int | None:
        """The least advanced seed's iteration (how far the whole row got)."""
        values = [r.iteration for r in self.runs if r.iteration is not None]
        return min(values) if values else None

    @property
    def max_iters(self) -> int | None:
        values = [r.max_iters for r in self.runs if r.max_iters is not None]
        return max(values) if values else None

    @property
    def paper_error(self) -> float | None:
        """The paper's number a mean is compared with: its mean over runs where it gives one."""
        if self.paper is None:
            return None
        return self.paper.get("test_error_mean") or self.paper["test_error"]

    @property
    def diff(self) -> float | None:
        """Measured mean test error minus the paper's, in points; only for completed runs."""
        if self.status != "completed" or self.paper_error is None or self.test_error.mean is None:
            return None
        return self.test_error.mean - self.paper_error

    @property
    def numerics(self) -> str | None:
        """The runs' numerics (cnnbench.core.numerics), e.g. "fast (bf16, BN/128)"; several joined by "; "."""
        labels = sorted({r.numerics for r in self.runs if r.numerics})
        return "; ".join(labels) if labels else None

    @property
    def messages(self) -> list[str]:
        return [f"seed {r.seed}: {r.message}" for r in self.runs if r.message]


def value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _status_rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def status_counts(runs: list[RunRecord]) -> str:
    """ "2 completed, 1 diverged" (in the order of STATUSES)."""
    counts = Counter(r.status for r in runs)
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (_status_rank(s), s)))


def status_summary(runs: list[RunRecord]) -> str:
    """One status if all runs share it, else counts: "2 completed, 1 diverged"."""
    statuses = {r.status for r in runs}
    return statuses.pop() if len(statuses) == 1 else status_counts(runs)


def _distinguishing_design(configs: dict[str, list[RunRecord]]) -> dict[str, dict[str, Any]]:
    """Per configuration key, the settings (optimizer.lr, ...) that differ from configurations that share
    its data, model, options and depth: shown as options so their rows can be told apart."""
    by_primary: dict[str, list[str]] = defaultdict(list)
    for key, runs in configs.items():
        by_primary[runs[0].primary_key()].append(key)
    shown: dict[str, dict[str, Any]] = {}
    for keys in by_primary.values():
        designs = [configs[k][0].design for k in keys]
        all_names = set().union(*designs)
        varying = {n for n in all_names if len({json.dumps(d.get(n), default=str) for d in designs}) > 1}
        for key in keys:
            design = configs[key][0].design
            shown[key] = {n: design.get(n) for n in sorted(varying)}
    return shown


def _sort_key(row: Row) -> tuple:
    return (
        row.data,
        row.augment or "",
        _FAMILY_ORDER.get(row.model, len(_FAMILY_ORDER)),
        row.model,
        row.depth if row.depth is not None else -1,
        row.options_text,
        _status_rank(row.status),
        row.status,
    )


def build_rows(runs: list[RunRecord]) -> list[Row]:
    """Group runs into configurations (same key) and split each by status, so only runs that share a
    status are averaged: a diverged or unfinished seed never pulls a completed mean."""
    configs: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        configs[run.key()].append(run)
    extra = _distinguishing_design(configs)
    rows = []
    for key, config_runs in configs.items():
        first = config_runs[0]
        paper = paper_reference(
            {
                "model": {"name": first.model, **first.options},
                "depth": first.depth,
                "data": first.data,
                "augment": first.augment,
            }
        )
        by_status: dict[str, list[RunRecord]] = defaultdict(list)
        for run in config_runs:
            by_status[run.status].append(run)
        for status, status_runs in by_status.items():
            rows.append(
                Row(
                    data=first.data,
                    augment=first.augment,
                    model=first.model,
                    depth=first.depth,
                    options={**first.options, **extra[key]},
                    status=status,
                    config_status=status_summary(config_runs),
                    runs=status_runs,
                    paper=paper,
                    all_runs=config_runs,
                )
            )
    return sorted(rows, key=_sort_key)


def duplicate_seed_warnings(rows: list[Row]) -> list[str]:
    """Two runs of one configuration with the same seed are probably a re-run counted twice."""
    by_config: dict[tuple, list[RunRecord]] = defaultdict(list)
    for row in rows:
        by_config[(row.name, row.data, row.augment)].extend(row.runs)
    warnings = []
    for (name, _, _), runs in by_config.items():
        dupes = sorted(s for s, c in Counter(r.seed for r in runs if r.seed is not None).items() if c > 1)
        if dupes:
            folders = ", ".join(str(r.path) for r in runs if r.seed in dupes)
            warnings.append(f"{name}: seed {', '.join(map(str, dupes))} appears in several runs ({folders}).")
    return warnings
