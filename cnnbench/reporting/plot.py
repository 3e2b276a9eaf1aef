"""report.png in the layout of He et al. 2016, Figure 6: one panel per model family, training error
dashed, test error solid and bold, one colour per depth, mean over seeds. Curves of a few points (a
run evaluated once) carry markers, so every curve the legend names shows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from cnnbench.reporting.runs import Curve, RunRecord, read_curves
from cnnbench.reporting.summary import Row

TRAIN_TAG, TEST_TAG = "error/train", "error/test"
_MARKERS = (None, "o", "s", "^", "D", "v")
FEW_POINTS = 3  # a curve of this many points or fewer gets a marker on each


def rows_to_plot(rows: list[Row]) -> list[Row]:
    """Completed rows; a configuration with no completed run shows its other rows (labelled) instead, so
    a sweep in progress still gets a figure but a stray failed seed does not clutter a finished one."""
    done = {(r.name, r.data, r.augment) for r in rows if r.status == "completed"}
    return [r for r in rows if r.status == "completed" or (r.name, r.data, r.augment) not in done]


def mean_curve(curves: list[Curve]) -> Curve | None:
    """Mean over seeds on the iterations all of them reached (seeds are interpolated onto the union of
    their steps, so different evaluation grids still average)."""
    curves = [c for c in curves if len(c.steps)]
    if not curves:
        return None
    if len(curves) == 1:
        return curves[0]
    lo, hi = max(c.steps[0] for c in curves), min(c.steps[-1] for c in curves)
    grid = np.unique(np.concatenate([c.steps[(c.steps >= lo) & (c.steps <= hi)] for c in curves]))
    if not len(grid):
        return None
    values = np.mean([np.interp(grid, c.steps, c.values) for c in curves], axis=0)
    return Curve(grid, values)


def _panels(rows: list[Row]) -> dict[tuple[str, str | None, str], list[Row]]:
    panels: dict[tuple[str, str | None, str], list[Row]] = defaultdict(list)
    for row in rows:  # rows are already in Figure 6 order (plain, resnet, others)
        panels[(row.data, row.augment, row.model)].append(row)
    return panels


def _depth_colours(rows: list[Row]) -> dict[int | None, tuple]:
    """The same depth gets the same colour in every panel."""
    from matplotlib import colormaps

    depths = sorted({r.depth for r in rows}, key=lambda d: (d is None, d or 0))
    cmap = colormaps["tab10" if len(depths) <= 10 else "tab20"]
    return {d: cmap(i % cmap.N) for i, d in enumerate(depths)}


def _y_max(values: list[np.ndarray]) -> float:
    """Ignore the first 10% of each curve (errors near 90% at the start would squash the rest)."""
    tails = [v[len(v) // 10 :] for v in values]
    tails = [t[np.isfinite(t)] for t in tails]  # a diverged run logs NaN
    top = max((float(t.max()) for t in tails if len(t)), default=20.0)
    return float(min(100.0, max(5.0, np.ceil(top * 1.15))))


def _iterations(x: float, _pos: int) -> str:
    return f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"


def _label(row: Row, shown_options: set[str]) -> str:
    label = f"{row.model}-{row.depth}" if row.depth is not None else row.model
    label += "".join(f" {k}={row.options[k]}" for k in sorted(shown_options) if k in row.options)
    if len(row.runs) > 1:
        label += f" (mean of {len(row.runs)})"
    if row.status != "completed":
        label += f" [{row.status}]"
    return label


def _variant_markers(rows: list[Row]) -> list[str | None]:
    """No marker for the first configuration of a depth in a panel; markers tell the others apart
    (e.g. resnet-20 shortcut=A and shortcut=B share the depth colour)."""
    seen: dict[int | None, int] = defaultdict(int)
    markers = []
    for row in rows:
        markers.append(_MARKERS[seen[row.depth] % len(_MARKERS)])
        seen[row.depth] += 1
    return markers


def lone_points(values: np.ndarray) -> list[int]:
    """Indices of the finite points that no line segment reaches (a single evaluation, a point between
    NaNs): drawn as a line only, they would not show at all."""
    finite = np.isfinite(values)
    before = np.concatenate([[False], finite[:-1]])
    after = np.concatenate([finite[1:], [False]])
    return np.flatnonzero(finite & ~before & ~after).tolist()


def _curve_style(style: dict, values: np.ndarray) -> dict:
    """The row's style, with a marker on every point of a curve of a few points (its evaluations are
    the data) and on every lone point: each curve in the legend is visible."""
    few, lone = np.isfinite(values).sum() <= FEW_POINTS, lone_points(values)
    if not (few or lone):
        return style
    # A longer curve marks only its lone points, unless the row has a variant marker already (its sparse
    # markevery could skip them): then every point.
    markevery = lone if not few and style["marker"] is None else None
    return {**style, "marker": style["marker"] or "o", "markevery": markevery}


def _draw_panel(ax, title: str, rows: list[Row], colours: dict, curves_of: Callable[[Row], dict]) -> list:
    """Draw one panel; returns the plotted value arrays (for the shared y-limit)."""
    plotted = []
    markers = _variant_markers(rows)
    # Legends name only the options that tell this panel's lines apart ("resnet-20", not "... shortcut=A").
    shown = {k for r in rows for k in r.options if len({str(o.options.get(k)) for o in rows}) > 1}
    for row, marker in zip(rows, markers, strict=True):
        curves = curves_of(row)
        faded = row.status != "completed"
        style = {
            "color": colours[row.depth],
            "marker": marker,
            "markevery": 0.1,
            "markersize": 4,
            "alpha": 0.6 if faded else 1.0,
        }
        for tag, line, width in ((TRAIN_TAG, "--", 1.0), (TEST_TAG, "-", 2.2)):
            if tag in curves:
                values = 100 * curves[tag].values
                ax.plot(curves[tag].steps, values, line, lw=width, **_curve_style(style, values))
                plotted.append(values)
    handles = [
        Line2D([], [], color=colours[r.depth], lw=2.2, marker=m, markersize=4, label=_label(r, shown))
        for r, m in zip(rows, markers, strict=True)
    ]
    handles += [
        Line2D([], [], color="0.4", ls="--", lw=1.0, label="training error"),
        Line2D([], [], color="0.4", ls="-", lw=2.2, label="test error"),
    ]
    if not plotted:
        ax.text(
            0.5,
            0.5,
            "no TensorBoard error curves in these runs",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.4",
        )
    ax.set_title(title)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(_iterations))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    return plotted


def _safe_curves(run: RunRecord, warnings: list[str]) -> dict[str, Curve]:
    try:
        return read_curves(run.path)
    except Exception as exc:  # a truncated or foreign event file must not cost the whole report
        warnings.append(
            f"Could not read the TensorBoard files in {run.path} ({exc}); its curves are missing."
        )
        return {}


def plot_report(rows: list[Row], path: Path, warnings: list[str] | None = None) -> Path:
    """Write the Figure-6-style comparison of ``rows`` to ``path`` (PNG) and return it.

    Problems reading a run's event files are appended to ``warnings`` instead of raised."""
    report_figure(rows, warnings).savefig(path)
    return path


def report_figure(rows: list[Row], warnings: list[str] | None = None) -> Figure:
    """The figure ``plot_report`` writes (see there)."""
    rows = rows_to_plot(rows)
    warnings = warnings if warnings is not None else []
    cache: dict[Path, dict[str, Curve]] = {}

    def curves_of(row: Row) -> dict[str, Curve]:
        for run in row.runs:
            if run.path not in cache:
                cache[run.path] = _safe_curves(run, warnings)
        per_run = [cache[r.path] for r in row.runs]
        means = {tag: mean_curve([c[tag] for c in per_run if tag in c]) for tag in (TRAIN_TAG, TEST_TAG)}
        return {tag: c for tag, c in means.items() if c is not None}

    panels = _panels(rows) or {("", None, "no runs"): []}
    several_datasets = len({(d, a) for d, a, _ in panels}) > 1
    fig = Figure(figsize=(6 * len(panels), 4.5), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = _depth_colours(rows)
    plotted = []
    for ax, ((data, augment, model), panel_rows) in zip(axes, panels.items(), strict=True):
        title = f"{model} ({data}, augment: {augment or '?'})" if several_datasets else model
        plotted += _draw_panel(ax, title, panel_rows, colours, curves_of)
    for ax in axes:
        ax.set_ylim(0, _y_max(plotted))
    fig.suptitle(
        "Training (dashed) and test (solid) error on " + ", ".join(sorted({r.data for r in rows}) or ["-"])
    )
    fig.tight_layout()
    return fig
