"""Logging set-up shared by Hydra runs (conf/hydra/job_logging/cnnbench.yaml) and `cnnbench resume`."""

from __future__ import annotations

import logging
import logging.config
import sys
from pathlib import Path

from cnnbench.runs.files import LOG_NAME

PLAIN_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def is_interactive() -> bool:
    """A terminal a person watches (rich progress bar), rather than a CI or SLURM log file."""
    return sys.stdout.isatty()


class ConsoleHandler(logging.Handler):
    """Rich log lines on a terminal (they print above the progress bar), plain lines elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        if is_interactive():
            from rich.logging import RichHandler

            self._inner: logging.Handler = RichHandler(show_path=False, log_time_format="[%X]")
        else:
            self._inner = logging.StreamHandler(sys.stdout)
            self._inner.setFormatter(logging.Formatter(PLAIN_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self._inner.emit(record)


def setup_logging(run_dir: Path) -> None:
    """The handlers of a Hydra run (conf/hydra/job_logging/cnnbench.yaml), appending to the run folder's
    train.log; used by `cnnbench resume`, which runs outside Hydra."""
    from omegaconf import OmegaConf

    from cnnbench.core.config import conf_dir

    config = OmegaConf.load(conf_dir() / "hydra" / "job_logging" / "cnnbench.yaml")
    config.handlers.file.filename = str(run_dir / LOG_NAME)  # Hydra fills in its output dir here
    logging.config.dictConfig(OmegaConf.to_container(config))
