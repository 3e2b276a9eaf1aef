"""TensorBoard logging: event files directly in the run folder, one run per folder.

The hparams summary goes into the *same* run as the scalars (``SummaryWriter.add_hparams`` would make
a separate sub-run), so TensorBoard's HParams tab shows each job once, with its final ``error/test``
and ``error/train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

HPARAM_METRICS = ("error/test", "error/train", "loss/test", "loss/train")

LAYOUT = {
    "cnnbench": {
        "error (train dashed in the report, test solid)": [
            "Multiline",
            ["error/train", "error/test", "error/val"],
        ],
        "loss": ["Multiline", ["loss/train", "loss/test", "loss/val"]],
        "learning rate": ["Multiline", ["lr"]],
    }
}


class TensorBoardLog:
    def __init__(self, run_dir: Path, resume_from: int | None = None, enabled: bool = True) -> None:
        # On resume, purge_step makes TensorBoard drop any points a killed run logged after its
        # last checkpoint, so the continued curve has no duplicated or out-of-order steps.
        purge_step = resume_from + 1 if resume_from is not None else None
        # Disabled (ranks other than 0 of a distributed run): every call is a no-op.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step) if enabled else None

    def start(self, hparams: Mapping[str, object]) -> None:
        """Write the hparams summary and the custom-scalars layout (once, at a run's first start)."""
        if self.writer is None:
            return
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        _experiment, session_start, _session_end = hparams_summary(clean, dict.fromkeys(HPARAM_METRICS, 0.0))
        # Only the session-start record: with no per-run experiment summary, TensorBoard builds the HParams
        # columns from every run of a sweep (one run's experiment summary would hide other models' options)
        # and takes the metrics from the runs' scalars (error/test, error/train, ...).
        self.writer.file_writer.add_summary(session_start)
        self.writer.add_custom_scalars(LAYOUT)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
