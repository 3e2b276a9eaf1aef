"""Figures of ``cnnbench analyze`` and ``cnnbench landscape``.

Built on ``matplotlib.figure.Figure`` with an Agg canvas, not pyplot: no display is needed, nothing is
left open in pyplot's figure manager, and a notebook's own backend (inline) is not switched away.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def new_figure(**options) -> Figure:
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI)


def plot_analysis(analyses: Sequence, path: Path) -> None:
    """Write ``analysis_figure(analyses)`` to ``path`` (analysis.png)."""
    save_figure(analysis_figure(analyses), path)


def analysis_figure(analyses: Sequence) -> Figure:
    """He et al. 2016 Figure 7 (std of responses by layer and sorted) and the gradient norms per layer."""
    fig = new_figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    by_layer, sorted_ax, grads = axes
    where = {a.measured_at for a in analyses}
    response = (
        "BN output"
        if where == {"bn_output"}
        else ("conv output" if where == {"conv_output"} else "BN/conv output")
    )
    for k, a in enumerate(analyses):
        color = f"C{k}"
        x = range(1, len(a.stds) + 1)
        by_layer.plot(x, a.stds, color=color, marker=".", label=a.label)
        sorted_ax.plot(x, sorted(a.stds, reverse=True), color=color, marker=".", label=a.label)
        grads.plot(x, a.grads.layers, color=color, marker=".", label=f"{a.label} (trained)")
        if a.grads_init is not None:
            grads.plot(x, a.grads_init.layers, color=color, linestyle="--", label=f"{a.label} (init)")
    by_layer.set(xlabel="3x3 layer index (original order)", ylabel="std", title=f"Response std ({response})")
    sorted_ax.set(xlabel="3x3 layer index (sorted by magnitude)", ylabel="std", title="Response std, sorted")
    grads.set(
        xlabel="3x3 layer index (original order)",
        ylabel="||dL/dW||",
        yscale="log",
        title="Weight-gradient norm per layer (one fixed batch)",
    )
    samples = sorted({a.samples for a in analyses})
    fig.suptitle(
        f"Layer responses over {', '.join(map(str, samples))} test images, BN in eval mode; gradients with "
        "BN in train mode",
        fontsize=10,
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def landscape_figure(data: Sequence, settings) -> Figure:
    """1-D: loss and error curves, all runs on each panel. 2-D: per run a contour and a 3-D surface."""
    import numpy as np

    title = (
        f"filter-normalized random direction{'s' if settings.dims == 2 else ''} (seed {settings.seed}),\n"
        f"{settings.samples} training images, BN eval mode, {settings.precision}"
    )
    if settings.dims == 1:
        fig = new_figure(figsize=(11, 4))
        loss_ax, err_ax = fig.subplots(1, 2)
        for label, coords, loss, error in data:
            loss_ax.plot(coords, loss.numpy(), marker=".", label=label)
            err_ax.plot(coords, 100 * error.numpy(), marker=".", label=label)
        loss_ax.set(xlabel="alpha", ylabel="training loss", yscale="log", title="Loss along d1")
        err_ax.set(xlabel="alpha", ylabel="training error (%)", title="Error along d1")
        for ax in (loss_ax, err_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    else:
        n = len(data)
        fig = new_figure(figsize=(5.5 * max(n, 1.3), 9.5))
        for k, (label, coords, loss, _error) in enumerate(data):
            a, b = np.meshgrid(coords, coords, indexing="ij")
            z = np.log10(np.maximum(loss.numpy(), 1e-12))
            ax = fig.add_subplot(2, n, k + 1)
            contour = ax.contour(a, b, z, levels=20, cmap="viridis")
            ax.clabel(contour, fontsize=6, fmt="%.1f")
            ax.set(xlabel="alpha (d1)", ylabel="beta (d2)", title=f"{label}: log10 loss", aspect="equal")
            ax3 = fig.add_subplot(2, n, n + k + 1, projection="3d")
            ax3.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True)
            ax3.set(xlabel="alpha", ylabel="beta", zlabel="log10 loss", title=f"{label}: surface")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
