"""The run's steady state against the probe's prediction: a run of the probe's own workload whose step is
far from what the probe measured for its choice says so and marks the cached answer stale."""

from __future__ import annotations

import logging
from typing import Any

import torch

from cnnbench.core.cpuload import OtherLoad
from cnnbench.core.timing import median
from cnnbench.fastpath.choice import PROBE_BATCH, PROBE_DEPTH, candidate_name, steady_state_off
from cnnbench.fastpath.probe import mark_stale

log = logging.getLogger("cnnbench")

# The warm-up left out: the first logging window, and any ending this early (kernels, allocator, compile).
STEADY_SKIP_ITERS = 20
STEADY_WINDOWS, STEADY_STEPS = 3, 50  # at least this many logging windows and steps after the warm-up


class SteadyState:
    """Whether a run's steady-state step agrees with what the probe measured for its choice (once a run).

    Only for the probe's own workload, on a CPU, with the answer this run read from the probe or the cache:
    ResNet-20 (identity shortcuts, basic blocks, no stochastic depth), batch 128, 3x32x32 images, one
    process. There the prediction is the probed update itself and the loop adds up to ~9%; for another model
    or batch no scaling (by FLOPs or parameters) predicts a step within the tolerance. A step beyond
    ``STEADY_MAX_RATIO`` of the prediction either way is said once in train.log and the cached answer is
    marked stale, so the next start measures again; unless the run is slower while other processes use
    more than ``BUSY_PCT`` of a core: then the run is slowed, not the probe wrong.
    """

    def __init__(self, device: torch.device, candidate: str, predicted_ms: float, measured_at: str) -> None:
        self.device, self.candidate = device, candidate
        self.predicted_ms, self.measured_at = predicted_ms, measured_at
        self.windows: list[float] = []
        self.steps = 0
        self.last: int | None = None
        self.load = OtherLoad()
        self.done = False

    @classmethod
    def for_run(cls, parts: Any) -> SteadyState | None:
        """The check for a run (``parts``: its ``engine.parts.Parts``), or None where it does not apply."""
        fast_path, cfg = parts.fast_path, parts.cfg
        candidate = candidate_name(fast_path.precision, fast_path.channels_last)
        measured_at = fast_path.probe_record.get("measured_at")
        model = cfg.model
        reference = (
            parts.device.type == "cpu"
            and fast_path.chosen_by in ("probe", "cache")
            and measured_at
            and candidate in fast_path.timings_ms
            and model.name == "resnet"
            and int(cfg.depth) == PROBE_DEPTH
            and model.get("shortcut", "A") == "A"
            and model.get("block", "basic") == "basic"
            and float(model.get("stochastic_depth", 1.0) or 1.0) >= 1.0
            and int(parts.batch_size) == PROBE_BATCH
            and parts.dist.world_size == 1
            and tuple(parts.data.train_images.shape[1:]) == (3, 32, 32)
        )
        if not reference:
            return None
        return cls(parts.device, candidate, float(fast_path.timings_ms[candidate]), str(measured_at))

    def window(self, iteration: int, img_per_s: float) -> None:
        """A logging window of the run ended at ``iteration`` with ``img_per_s``; judges once enough
        windows after the warm-up are in."""
        if self.done or img_per_s <= 0:
            return
        if self.last is None or iteration <= STEADY_SKIP_ITERS:
            self.last = iteration
            self.load.start()  # other processes' load from the end of the warm-up on
            return
        self.windows.append(1e3 * PROBE_BATCH / img_per_s)
        self.steps += iteration - self.last
        self.last = iteration
        if len(self.windows) >= STEADY_WINDOWS and self.steps >= STEADY_STEPS:
            self.done = True
            self.load.stop()
            self._judge(median(self.windows))

    def _judge(self, measured_ms: float) -> None:
        if not steady_state_off(measured_ms, self.predicted_ms):
            return
        ratio = measured_ms / self.predicted_ms
        said = (
            f"The training step takes {measured_ms:.0f} ms in steady state (median of {len(self.windows)} "
            f"logging windows), {ratio:.2f}x the {self.predicted_ms:.0f} ms the fast-path probe measured for "
            f"{self.candidate} on this machine"
        )
        if ratio > 1 and self.load.busy():
            log.warning(
                "%s, but other processes used %.0f%% of a core meanwhile: this run is slowed by them; the "
                "probe's answer stands.",
                said,
                self.load.percent(),
            )
            return
        reason = f"a run's steady-state step was {ratio:.2f}x the {self.predicted_ms:.0f} ms measured"
        try:
            marked = mark_stale(self.device, self.measured_at, reason)
        except OSError as exc:  # the cache folder, not the run's: the run goes on
            log.warning(
                "%s: the probe's timings look wrong, but its cache could not be marked (%s).", said, exc
            )
            return
        then = "it measures again at the next start" if marked else "it has been measured again since"
        log.warning("%s: the probe's timings look wrong; %s.", said, then)
