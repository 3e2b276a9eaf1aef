"""How busy the machine was while we timed something: other processes' CPU time (Linux)."""

from __future__ import annotations

import os
import time
from pathlib import Path

# Other processes' CPU use (% of one core) above which a timing is not trusted: the fast-path probe's
# answer is then not final, the run's steady-state check blames the load, `cnnbench bench` warns. On two
# cores a third of a core taken by another job (34% measured) made the probe's channels-last rounds 2x
# slower: PyTorch's two OpenMP threads wait for each other at every operator, and one descheduled thread
# stalls both. 20% sits under that with room, and over the 1-4% an idle shared machine shows.
BUSY_PCT = 20.0
# A shorter window says nothing: /proc/stat counts in clock ticks (10 ms), so one tick of another process
# in a 0.1 s window reads as 10% of a core.
MIN_WINDOW_S = 1.0


class OtherLoad:
    """CPU time other processes used while we timed (Linux: /proc/stat minus this process's CPU time).

    On shared machines a window that overlaps someone else's job is slower; this makes it visible.
    ``percent()``: % of one core, averaged over the windows measured so far; None off Linux.
    """

    def __init__(self) -> None:
        self.available = Path("/proc/stat").is_file()
        self.other = self.wall = 0.0
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy_seconds() -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        if self.available:
            self._start = (self._busy_seconds(), time.process_time(), time.perf_counter())

    def stop(self) -> float | None:
        """% of one core used by other processes since ``start()``."""
        if not self.available or self._start is None:
            return None
        busy0, own0, wall0 = self._start
        other = max(self._busy_seconds() - busy0 - (time.process_time() - own0), 0.0)
        wall = time.perf_counter() - wall0
        self.other += other
        self.wall += wall
        self._start = None
        return 100.0 * other / max(wall, 1e-9)

    def percent(self) -> float | None:
        return 100.0 * self.other / self.wall if self.available and self.wall > 0 else None

    def busy(self) -> bool:
        """Whether other processes used more than ``BUSY_PCT`` over the windows so far (at least
        ``MIN_WINDOW_S`` of them: shorter ones cannot tell); False off Linux, where nothing is known."""
        percent = self.percent()
        return percent is not None and self.wall >= MIN_WINDOW_S and percent > BUSY_PCT
