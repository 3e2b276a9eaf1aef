"""Ctrl-C, SIGTERM and a scheduler's requeue signal as a request to stop cleanly after the current step."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger("cnnbench")

# submitit (Hydra's SLURM launcher) requeues a job on this signal, sent `signal_delay_s` before the time
# limit or on preemption; its name is configurable there through this variable (default USR2).
SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def requeue_signal() -> signal.Signals | None:
    name = os.environ.get(SUBMITIT_SIGNAL_ENV, "USR2")
    return getattr(signal, f"SIG{name}", None)


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second Ctrl-C aborts at once.

    Under a scheduler that installed its own handler for its requeue signal (submitit's USR2), that
    signal stops the loop the same way, and ``hand_over()`` then passes it on to the scheduler's handler
    (which requeues the job and exits): the job continues later from the checkpoint just written.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._handed_over: dict[int, Any] = {}
        self._announced = False

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            requeue = requeue_signal()
            if requeue is not None and callable(signal.getsignal(requeue)):
                self._handed_over[requeue] = signal.signal(requeue, self._handle)
                self._previous[requeue] = self._handed_over[requeue]
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requeued(self) -> bool:
        """Whether the stop came from the scheduler's requeue signal."""
        return self.signum in self._handed_over

    def hand_over(self) -> None:
        """After the checkpoint: let the scheduler's own handler requeue the job (it usually exits)."""
        if self.requeued:
            log.warning(
                "Checkpoint written; handing %s over to the scheduler to requeue this job.",
                signal.Signals(self.signum).name,
            )
            self._handed_over[self.signum](self.signum, None)

    def announce(self) -> None:
        """Say (once) that a stop was requested. Called by the loop, never from the signal handler:
        a handler that logs can interrupt a log write to the same file and fail re-entrantly."""
        if self.signum is not None and not self._announced:
            self._announced = True
            log.warning(
                "%s received: finishing the current step and writing a checkpoint "
                "(Ctrl-C again to abort at once).",
                signal.Signals(self.signum).name,
            )

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # checkpoints are atomic: aborting here cannot leave a half-written one
        self.signum = signum  # nothing else here: no logging or I/O inside a signal handler
