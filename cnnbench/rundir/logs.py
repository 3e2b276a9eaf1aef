"""Logging set-up shared by Hydra runs (conf/hydra/job_logging/cnnbench.yaml) and `cnnbench resume`."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from pathlib import Path

from cnnbench.rundir.files import LOG_NAME, os_error_of, write_error

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
        if isinstance(self._inner, logging.StreamHandler):
            # The stdout of now, not of when the run started: an in-process caller (a notebook cell, a test
            # runner) may have swapped and closed the one the handler was made with.
            self._inner.stream = sys.stdout
        self._inner.emit(record)


def setup_logging(run_dir: Path) -> None:
    """The handlers of a Hydra run (conf/hydra/job_logging/cnnbench.yaml), appending to the run folder's
    train.log; used by `cnnbench resume`, which runs outside Hydra."""
    from omegaconf import OmegaConf

    from cnnbench.core.config import conf_dir

    config = OmegaConf.load(conf_dir() / "hydra" / "job_logging" / "cnnbench.yaml")
    config.handlers.file.filename = str(run_dir / LOG_NAME)  # Hydra fills in its output dir here
    try:
        logging.config.dictConfig(OmegaConf.to_container(config))
        watch_log_file(run_dir)  # from the first line on (see LogFileWatch)
    except ValueError as exc:  # logging's "Unable to configure handler 'file'", from the OSError
        error = os_error_of(exc)
        if error is None:
            raise
        raise write_error(
            run_dir / LOG_NAME,
            error,
            "Nothing was changed.",
            f"The run folder must be writable to continue the run: make {run_dir} writable by this user "
            f"(or copy the run somewhere writable and resume the copy).",
        ) from None


class LogFileWatch:
    """Keeps the first failed write to a run's train.log (a full disk) instead of logging's printout.

    logging answers a failed write by printing a traceback to stderr and carrying on. For a run's own log
    that is not enough: the run must stop (as it does when any of its files cannot be written), and the
    user should read one message, not a traceback per line. ``error`` is that write's OSError (None while
    every line was written); the run reads it at its next record write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: OSError | None = None

    def watch(self, handler: logging.Handler) -> None:
        previous = handler.handleError

        def handle_error(record: logging.LogRecord) -> None:
            exc = sys.exc_info()[1]
            if not isinstance(exc, OSError):
                previous(record)
            elif self.error is None:
                self.error = OSError(exc.errno, exc.strerror or str(exc), str(self.path))

        handler.handleError = handle_error  # type: ignore[method-assign]


def watch_log_file(run_dir: Path) -> LogFileWatch:
    """Watch the handlers that write ``run_dir``'s train.log (Hydra's job logging, or ``setup_logging``).
    Watched once: a later call returns the same watch, with what it saw since the first."""
    path = Path(run_dir) / LOG_NAME
    target = os.path.realpath(path)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and os.path.realpath(h.baseFilename) == target
    ]
    for handler in handlers:
        watched = getattr(handler, "cnnbench_watch", None)
        if watched is not None:
            return watched
    watch = LogFileWatch(path)
    for handler in handlers:
        watch.watch(handler)
        handler.cnnbench_watch = watch  # type: ignore[attr-defined]
    return watch
