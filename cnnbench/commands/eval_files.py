"""What `cnnbench eval` writes into a run folder: eval.json (one entry per evaluation), confusion.png and
the confusion figure in the run's TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnbench.commands.eval_options import CONFUSION_NAME, EVAL_NAME, EvalResult, value_text
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import (
    write_atomic,
    write_error,
    write_json_atomic,
)


def check_writable_eval_json(run_dir: Path) -> dict[str, Any]:
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
        " " + " ".join(f"{k}={value_text(v)}" for k, v in result.data_overrides.items())
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
    record = check_writable_eval_json(run_dir)
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

    from cnnbench.rundir.tb import quiet_writer_threads

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
