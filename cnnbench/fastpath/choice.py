"""The fast path's decisions, pure and unit-tested with made-up timings: the candidates' names, which
is fastest within a tolerance, whether a probe's rounds are too noisy to trust, whether a run's steady
state contradicts the probe, whether compiling pays, and the ways of running the update on CUDA."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

CACHE_FILE = "fastpath.json"  # in the cache folder (per machine) and in a sweep folder (per sweep)
# 2: answers record their rounds, spread and load, and a noisy one is provisional. Version 1's answers
# recorded neither, and one measured beside a third of a core of other work was cached as final: every
# machine measures once more.
PROBE_VERSION = 2
# Among candidates within this fraction of the fastest, prefer the more accurate / default one:
# fp32 over bf16 over fp16, channels-last over NCHW.
TIE_TOLERANCE = 0.03
# Compile only when it is this much faster (it also costs its compilation time at every start).
COMPILE_MIN_GAIN = 0.03
PRECISION_ORDER = ("fp32", "bf16", "fp16")
PROBE_BATCH, PROBE_DEPTH = 128, 20
PROBE_BUDGET_S = 12.0  # seconds the precision/layout probe may take, once per machine
# A noisy probe is measured again, in shorter tries (the rounds, not the warm-up, are what is shortened),
# at most PROBE_TRIES in all and none started after PROBE_TOTAL_S: a busy machine gets a provisional answer
# in bounded time, never a start that waits for the machine to become idle.
PROBE_TRIES = 3
# Steps per round: a CPU step of the reference workload takes 0.1-0.4 s; a GPU step a few ms, and a round
# of two would be too short for its rounds to agree within SPREAD_MAX_PCT (unmeasured: no GPU run yet).
PROBE_STEPS = {"cpu": 2, "cuda": 20}
PROBE_RETRY_BUDGET_S = 6.0
PROBE_TOTAL_S = 30.0
# A candidate's two fastest rounds must agree within this (% of the fastest). On an idle machine they agree
# within a few % (docs/performance.md); a window that other work disturbs is 1.3x to 100x slower. Two rounds
# that agree confirm the fastest: other processes only ever slow a round, never speed one up.
SPREAD_MAX_PCT = 10.0
# The run's steady-state step against the probe's prediction for its choice: beyond this ratio either way
# the probe's timing was wrong (a training step costs the probed update plus up to ~9% for sampling,
# augmentation and the loop, RandAugment and CutMix included; compiling saves ~5%: docs/performance.md).
STEADY_MAX_RATIO = 1.5

# Compile modes. The CPU's was measured there (docs/performance.md). On CUDA, Inductor's default mode:
# max-autotune spends minutes autotuning every new graph, which a run of a small net on a fast GPU
# cannot repay (trainer.compile_mode=max-autotune-no-cudagraphs asks for it; a sweep's shared compile
# cache, cnnbench/fastpath/compilecache.py, then pays it once per graph).
CPU_COMPILE_MODE = "max-autotune-no-cudagraphs"
CUDA_COMPILE_MODE = "default"
RECORDED_COMPILE_MODE = "max-autotune-no-cudagraphs"  # what runs recorded before the mode was chosen used
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
INDUCTOR_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # Inductor's own CUDA graphs: not with ours


@dataclass(frozen=True)
class FastPath:
    """The settings a run trains with, and how they were chosen (for the records)."""

    precision: str
    channels_last: bool
    compile: bool
    chosen_by: str = "config"  # config | probe | cache | sweep | recorded | rule
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The probe answer behind a probe/cache choice: when it was measured, whether it is provisional, the
    # other processes' load and the rounds' spread (what the run's steady-state check compares against).
    probe_record: dict[str, Any] = field(default_factory=dict)
    # The update as one captured CUDA graph, and the optimizer's fused implementation (records written
    # before these existed read as False: what those runs did).
    cuda_graphs: bool = False
    fused_optimizer: bool = False
    compile_mode: str = RECORDED_COMPILE_MODE
    variant_timings_ms: dict[str, float] = field(default_factory=dict)  # CUDA: the update variants timed

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def candidate_name(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'channels_last' if channels_last else 'nchw'}"


def parse_candidate(name: str) -> tuple[str, bool]:
    precision, layout = name.split("/")
    return precision, layout == "channels_last"


# ----- the decision (pure: unit-tested with faked timings) ------------------------------------------
def choose(timings_ms: Mapping[str, float], tolerance: float = TIE_TOLERANCE) -> str:
    """The candidate to use: the fastest, or a more accurate/default one within ``tolerance`` of it."""
    if not timings_ms:
        raise ValueError("no timings to choose from")
    fastest = min(timings_ms.values())
    near = [name for name, ms in timings_ms.items() if ms <= fastest * (1 + tolerance)]

    def preference(name: str) -> tuple[int, int]:
        precision, channels_last = parse_candidate(name)
        return PRECISION_ORDER.index(precision), 0 if channels_last else 1

    return min(near, key=preference)


def round_stats(samples: Sequence[float]) -> dict[str, Any]:
    """One candidate's rounds (ms per step): the fastest (what decides), the median, the spread (the second
    fastest over the fastest, in %; None for a single round) and the number of rounds."""
    ordered = sorted(samples)
    spread = 100.0 * (ordered[1] / ordered[0] - 1) if len(ordered) > 1 and ordered[0] > 0 else None
    return {
        "fastest_ms": ordered[0],
        "median_ms": statistics.median(ordered),
        "spread_pct": spread,
        "rounds": len(ordered),
    }


def largest_spread(stats: Mapping[str, Mapping[str, Any]]) -> tuple[str, float] | None:
    """The candidate whose two fastest rounds differ most, and by how much (%); None if none had two."""
    spreads = [(name, s["spread_pct"]) for name, s in stats.items() if s.get("spread_pct") is not None]
    return max(spreads, key=lambda item: item[1]) if spreads else None


def noise_reasons(
    stats: Mapping[str, Mapping[str, Any]],
    load_pct: float | None,
    busy: bool,
    spread_max_pct: float = SPREAD_MAX_PCT,
) -> list[str]:
    """Why a probe's timings cannot be trusted (empty: they can): other processes' load over the threshold
    (``busy``, judged by ``cpuload.OtherLoad``), or a candidate whose two fastest rounds disagree.

    A single round (a machine too slow for two in the budget) has no spread: only the load judges it.
    """
    reasons = [f"other processes used {load_pct:.0f}% of a core"] if busy and load_pct is not None else []
    for name, s in sorted(stats.items()):
        if s.get("spread_pct") is not None and s["spread_pct"] > spread_max_pct:
            reasons.append(f"{name}'s two fastest rounds differ by {s['spread_pct']:.0f}%")
    return reasons


def steady_state_off(measured_ms: float, predicted_ms: float, max_ratio: float = STEADY_MAX_RATIO) -> bool:
    """Whether a run's steady-state step is too far from the probe's prediction (either way) to be the
    cost of the loop around the probed update: then the probe's timing was wrong."""
    ratio = measured_ms / predicted_ms
    return ratio > max_ratio or ratio < 1 / max_ratio


def choose_compile(eager_ms: float, compiled_ms: float, min_gain: float = COMPILE_MIN_GAIN) -> bool:
    return compiled_ms < eager_ms * (1 - min_gain)


# ----- the ways of running the update on CUDA (pure: unit-tested with faked timings) -----------------
@dataclass(frozen=True)
class Variant:
    compile: bool
    fused: bool
    graphs: bool

    @property
    def name(self) -> str:
        return f"{'compiled' if self.compile else 'eager'}/{'fused' if self.fused else 'foreach'}" + (
            "+graphs" if self.graphs else ""
        )

    @property
    def simplicity(self) -> tuple[bool, bool, bool]:
        """Near-ties go to the simplest: no compile (start-up cost), no graph, then the default optimizer."""
        return self.compile, self.graphs, self.fused


VARIANTS = tuple(
    Variant(c, f, g) for c in (False, True) for f in (False, True) for g in (False, True) if f or not g
)  # a captured update needs the fused optimizer: foreach reads a tensor lr back every step
BY_NAME = {v.name: v for v in VARIANTS}


def allowed_variants(
    compile_flag: bool | None,
    graphs_flag: bool | None,
    fused_flag: bool | None,
    *,
    consider_compile: bool,
    fused_ok: bool = True,
    graphs_ok: bool = True,
) -> list[Variant]:
    """The variants an ``auto`` setting may pick: explicit settings fix their flag; ``consider_compile``
    says whether a compiled variant is worth measuring (a long enough run, or compile asked for)."""
    return [
        v
        for v in VARIANTS
        if (v.compile == compile_flag if compile_flag is not None else (consider_compile or not v.compile))
        and (v.graphs == graphs_flag if graphs_flag is not None else (graphs_ok or not v.graphs))
        and (v.fused == fused_flag if fused_flag is not None else (fused_ok or not v.fused))
    ]


def choose_variant(
    timings_ms: Mapping[str, float],
    compile_s: float = 0.0,
    max_iters: int = 0,
    tolerance: float = TIE_TOLERANCE,
) -> str:
    """The variant to run: the fastest whose cost the run repays, or a simpler one within ``tolerance``.

    A compiled variant counts only when its gain over the fastest uncompiled one, over ``max_iters``
    steps, is at least its compilation time ``compile_s``.
    """
    if not timings_ms:
        raise ValueError("no timings to choose from")
    uncompiled = [ms for name, ms in timings_ms.items() if not BY_NAME[name].compile]
    base = min(uncompiled) if uncompiled else None

    def repaid(name: str, ms: float) -> bool:
        if not BY_NAME[name].compile or base is None:
            return True
        return (base - ms) * max_iters / 1e3 >= compile_s

    eligible = {name: ms for name, ms in timings_ms.items() if repaid(name, ms)}
    fastest = min(eligible.values())
    near = [name for name, ms in eligible.items() if ms <= fastest * (1 + tolerance)]
    return min(near, key=lambda name: BY_NAME[name].simplicity)
