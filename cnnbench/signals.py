"""Ctrl-C and SIGTERM (SLURM preemption) as a request to stop cleanly after the current step."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("cnnbench")


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # checkpoints are atomic: aborting here cannot leave a half-written one
        self.signum = signum
        log.warning(
            "%s received: finishing the current step and writing a checkpoint "
            "(Ctrl-C again to abort at once).",
            signal.Signals(signum).name,
        )
