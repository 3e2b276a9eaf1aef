"""TensorBoard logging: event files directly in the run folder, one run per folder.

The hparams summary goes into the *same* run as the scalars (``SummaryWriter.add_hparams`` would make
a separate sub-run), so TensorBoard's HParams tab shows each job once, with its final ``error/test``
and ``error/train``.

The Custom Scalars tab mirrors He et al. 2016, Figure 6: a "training error" and a "test error"
category, each with one chart for plain nets and one for residual nets (then loss, lr and gradient
flow). A Custom Scalars chart selects *tags* by regular expression, in every run; it cannot select
runs. So each run also logs its two error curves under a tag that names its family,
``figure6/train_error/plain``, ``figure6/test_error/residual``: two extra scalars per point, while
every other chart reuses the tags as they are. ``error/train`` and ``error/test`` stay (the HParams
metrics and ``cnnbench report`` read them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from cnnbench.rundir.files import os_error_of

HPARAM_METRICS = ("error/test", "error/train", "loss/test", "loss/train")

# Figure 6's panels: plain nets | residual nets. Other families get a chart of their own.
PLAIN, RESIDUAL = "plain", "residual"
RESIDUAL_MODELS = frozenset({"resnet", "preact_resnet", "wide_resnet"})
# The error curves logged a second time under a family tag, and the Figure 6 category of each.
FIGURE6 = {
    "error/train": ("train_error", "Figure 6: training error"),
    "error/test": ("test_error", "Figure 6: test error"),
}
LAYOUT_TAG = "custom_scalars__config__"  # tensorboard.plugins.custom_scalar.metadata.CONFIG_SUMMARY_TAG


def family(model: str) -> str:
    """The Figure 6 panel a model belongs to: ``plain``, ``residual``, or its own name."""
    if model == PLAIN:
        return PLAIN
    return RESIDUAL if model in RESIDUAL_MODELS else model


def figure6_tag(tag: str, family_name: str) -> str:
    """``error/train`` of a plain net -> ``figure6/train_error/plain``."""
    return f"figure6/{FIGURE6[tag][0]}/{family_name}"


def _chart(title: str, *regexes: str) -> layout_pb2.Chart:
    # Regexes are matched from the tag's start (re.match); "$" keeps error/test from taking error/test_ema.
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(regexes)))


def _figure6_categories(families: list[str]) -> list[layout_pb2.Category]:
    titles = {PLAIN: "plain nets", RESIDUAL: "residual nets"}
    return [
        layout_pb2.Category(
            title=category,
            chart=[_chart(titles.get(f, f"{f} nets"), f"{figure6_tag(tag, f)}$") for f in families],
        )
        for tag, (_, category) in FIGURE6.items()
    ]


def _other_categories() -> list[layout_pb2.Category]:
    category = layout_pb2.Category
    return [
        category(
            title="loss",
            chart=[_chart("training loss", "loss/train$"), _chart("test loss", "loss/test$")],
        ),
        category(title="learning rate", chart=[_chart("lr", "lr$")]),
        category(
            title="gradient flow",
            chart=[
                _chart("gradient norm ratio, first / last block", "grad_norm/ratio_first_last$"),
                _chart("gradient norm per stage", "grad_norm/stage/"),
                _chart("weight norm per stage", "weight_norm/stage/"),
            ],
        ),
        # Many curves, or curves only some runs log: folded until opened.
        category(
            title="gradient flow per block",
            closed=True,
            chart=[
                _chart("gradient norm per block", "grad_norm/block/"),
                _chart("weight norm per block", "weight_norm/block/"),
            ],
        ),
        category(
            title="validation and EMA",
            closed=True,
            chart=[
                _chart("error", "error/val$", "error/val_ema$", "error/test_ema$"),
                _chart("loss", "loss/val$", "loss/val_ema$", "loss/test_ema$"),
            ],
        ),
    ]


def layout(model: str | None = None) -> layout_pb2.Layout:
    """The Custom Scalars layout a run writes. TensorBoard merges the runs' layouts by category title
    and drops repeated charts, so a run of another family (densenet) adds its own Figure 6 charts."""
    families = [PLAIN, RESIDUAL]
    if model is not None and family(model) not in families:
        families.append(family(model))
    return layout_pb2.Layout(category=[*_figure6_categories(families), *_other_categories()])


def layout_summary(layout_proto: layout_pb2.Layout) -> Summary:
    """The event that carries a layout (as torch's ``add_custom_scalars`` writes it, which cannot fold
    a category)."""
    tensor = TensorProto(
        dtype="DT_STRING", string_val=[layout_proto.SerializeToString()], tensor_shape=TensorShapeProto()
    )
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag=LAYOUT_TAG, tensor=tensor, metadata=metadata)])


def quiet_writer_threads() -> None:
    """TensorBoard writes from a thread of its own; a write that fails there (a full disk) is raised again
    by the writer's next call in the loop, which reports it as the run's own error. Python would also print
    the thread's traceback: this keeps that one quiet (every other thread's exception still prints)."""
    previous = threading.excepthook
    if getattr(previous, "cnnbench_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    hook.cnnbench_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def after_earlier_event_files(run_dir: Path) -> None:
    """Wait (under a second) until a new event file's name sorts after those already in ``run_dir``.

    TensorBoard reads a folder's event files in name order, ``events.out.tfevents.<second>.<host>.<pid>.
    <counter>``, the last two unpadded: a writer started in the same second as the one before, as a
    resume by the same call in the same process is, can be named ``...10`` after ``...9`` and be read
    first, its purge of the points after the checkpoint then coming before those points. A later
    second sorts after, whatever follows it.
    """
    seconds = [p.name.split(".")[3] for p in run_dir.glob("events.out.tfevents.*")]
    latest = max((int(s) for s in seconds if s.isdigit()), default=None)
    # More than a second to wait: that file is from a clock since set back; waiting would not help.
    if latest is not None and 0 < (wait := latest + 1 - time.time()) <= 1:
        time.sleep(wait)


class TensorBoardLog:
    """The run's TensorBoard writer. A write that fails (a full disk) raises the ``OSError`` behind it,
    with ``filename`` set to the event file, from whichever call first finds out (writes are asynchronous:
    at the latest from ``flush``)."""

    def __init__(
        self, run_dir: Path, resume_from: int | None = None, enabled: bool = True, model: str | None = None
    ) -> None:
        # On resume, purge_step makes TensorBoard drop any points a killed run logged after its
        # last checkpoint, so the continued curve has no duplicated or out-of-order steps.
        purge_step = resume_from + 1 if resume_from is not None else None
        self.path = Path(run_dir) / "events.out.tfevents.*"  # named by the writer; see _writing()
        self.writer: SummaryWriter | None = None
        # Disabled (ranks other than 0 of a distributed run): every call is a no-op.
        if enabled:
            quiet_writer_threads()
            after_earlier_event_files(Path(run_dir))
            with self._writing():
                self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
            self.path = Path(getattr(self.writer.file_writer.event_writer, "_file_name", self.path))
        # Known from construction on, so a resumed run (no start()) keeps logging its family tags.
        self.model = model
        self.family = family(model) if model is not None else None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = os_error_of(exc)
            if error is None:
                raise
            raise OSError(error.errno, error.strerror or str(error), str(self.path)) from None

    def start(self, hparams: Mapping[str, object]) -> None:
        """Write the hparams summary and the custom-scalars layout (once, at a run's first start)."""
        if self.writer is None:
            return
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        _experiment, session_start, _session_end = hparams_summary(clean, dict.fromkeys(HPARAM_METRICS, 0.0))
        # Only the session-start record: with no per-run experiment summary, TensorBoard builds the HParams
        # columns from every run of a sweep (one run's experiment summary would hide other models' options)
        # and takes the metrics from the runs' scalars (error/test, error/train, ...).
        with self._writing():
            self.writer.file_writer.add_summary(session_start)
            self.writer.file_writer.add_summary(layout_summary(layout(self.model)))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        with self._writing():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)
                if self.family is not None and tag in FIGURE6:
                    self.writer.add_scalar(figure6_tag(tag, self.family), value, global_step=step)

    def flush(self) -> None:
        """Wait until every point logged so far is in the file (or raise the write's OSError)."""
        if self.writer is not None:
            with self._writing():
                self.writer.flush()

    def close(self) -> None:
        """Flush and close; a write that fails now is left unreported (the run has ended, and its last
        ``flush`` has already answered for what it needed)."""
        if self.writer is not None:
            with suppress(OSError):
                self.writer.close()
