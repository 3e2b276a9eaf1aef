"""What `cnnbench bench` measured: one ``BenchResult``, whose fields are the keys of ``--json`` in their
order (documented in docs/performance.md, "JSON keys")."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class BenchResult:
    # the network and the data the trainer loaded
    model: str
    depth: int
    params: int
    data: str
    synthetic: bool
    train_images: int
    test_images: int
    # what ran (resolved: precision is never auto)
    batch_size: int
    device: str
    precision: str
    compiled: bool
    channels_last: bool
    threads: int
    torch: str
    # the protocol actually used
    iters: int
    warmup: int
    repeats: int
    eval_images: int
    # medians over the rounds, and what is derived from them
    train_img_per_s: float
    train_step_ms: float
    pure_step_ms: float
    loop_overhead_pct: float
    input_ms: float
    input_overhead_pct: float
    grad_norm_ms: float
    log_grad_every: int
    grad_norm_overhead_pct: float
    eval_img_per_s: float
    step_gflop: float
    achieved_gflops: float
    matmul_peak_gflops: float
    peak_fraction: float
    fast_path: dict[str, Any]
    peak_memory_mb: float
    peak_memory_kind: str
    other_cpu_pct: float | None
    # the loops cnnbench is compared with (None when not run)
    minimal_train_img_per_s: float | None
    minimal_step_ms: float | None
    vs_minimal: float | None
    baseline_train_img_per_s: float | None
    baseline_step_ms: float | None
    speedup: float | None
    samples: dict[str, list[float]]  # every round's values behind the medians

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object: every field, in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
