"""The GPU check's sizes and yardsticks: its constants, cnnbench's performance targets, and the two
profiles (the GPU run and its CPU dry run), which differ only in sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: benchmarks/gpu_check/ is two folders down
SCHEMA_VERSION = 1
PAPER_ITERS = 64_000  # iterations of one job of the paper's recipe
SWEEP_DEPTHS = (20, 32, 44, 56)  # the 8-network sweep: plain and ResNet at each depth
SUMMARY_JSON, SUMMARY_MD, LOG_NAME = "summary.json", "summary.md", "check.log"
STATUSES = ("ok", "failed", "skipped")
DRY_RUN_ENV = "CNNBENCH_GPU_CHECK_DRY_RUN"
STEPS_ENV = "CNNBENCH_GPU_CHECK_STEPS"  # --steps: only these steps run (the tests' short dry run)
REQUIRE_CUDA_ENV = "CNNBENCH_REQUIRE_CUDA"  # tests/test_cuda.py: fail instead of skipping without a GPU
CUDA_MARK = re.compile(r"pytest\.mark\.cuda\b")
TAIL_LINES = 25  # output lines of a command kept in check.log

# cnnbench's performance targets, measured on the GPU (extrapolations from >= 500 timed steps after warm-up).
TARGETS: dict[str, tuple[str, float, str]] = {
    "resnet20_64k_s": ("ResNet-20, 64k iterations of batch 128: training time", 90.0, "s"),
    "resnet56_64k_s": ("ResNet-56, 64k iterations of batch 128: training time", 240.0, "s"),
    "sweep_shared_s": ("8-network sweep (64k each) on one GPU, jobs sharing it", 600.0, "s"),
    "sweep_one_at_a_time_s": ("8-network sweep (64k each), one job at a time", 1200.0, "s"),
    "loop_overhead_resnet20_pct": ("loop overhead over the pure step, ResNet-20", 5.0, "%"),
    "loop_overhead_resnet56_pct": ("loop overhead over the pure step, ResNet-56", 5.0, "%"),
    "check_total_s": ("the whole check, install included", 480.0, "s"),
}
MIN_TIMED_STEPS = 500  # per measurement on the GPU, after warm-up


# ----- sizes: the GPU run and its dry run differ only here ------------------------------------------
@dataclass(frozen=True)
class Profile:
    name: str  # "gpu" or "dry-run"
    device: str
    total_budget_s: float  # the whole check, install included
    batch_size: int
    data_sizes: tuple[str, ...]  # synthetic data for the benchmarks
    iters: int  # timed steps per window: iters x repeats >= MIN_TIMED_STEPS on the GPU
    repeats: int
    warmup: int
    eval_images: int
    jobs_ks: tuple[int, ...]
    jobs_seconds: float  # each concurrent window
    jobs_warmup: int
    jobs_data: tuple[str, ...]
    sweep_jobs_per_gpu: int  # the quick sweep: its 4 jobs, this many at once on the GPU
    sweep_overrides: tuple[str, ...]
    pytest_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


GPU = Profile(
    name="gpu",
    device="cuda",
    total_budget_s=480.0,
    batch_size=128,
    data_sizes=(),  # CIFAR-sized: 50k train / 10k test images
    iters=170,
    repeats=3,
    warmup=20,
    eval_images=2000,
    jobs_ks=(1, 2, 4, 8),
    jobs_seconds=6.0,
    jobs_warmup=30,
    jobs_data=("data.train_size=10000", "data.test_size=1000"),
    sweep_jobs_per_gpu=4,
    sweep_overrides=(),
    pytest_args=("-v",),  # one line per finished test: what ran is known even if time runs out
    env={REQUIRE_CUDA_ENV: "1"},
)
DRY_RUN = Profile(
    name="dry-run",
    device="cpu",
    total_budget_s=600.0,
    batch_size=16,
    data_sizes=("data.train_size=256", "data.test_size=64"),
    iters=2,
    repeats=1,
    warmup=1,
    eval_images=32,
    jobs_ks=(1, 2),
    jobs_seconds=0.5,
    jobs_warmup=1,
    jobs_data=("data.train_size=256", "data.test_size=64"),
    sweep_jobs_per_gpu=2,
    sweep_overrides=(
        "trainer.max_iters=6",
        "trainer.batch_size=16",
        "trainer.eval_every=3",
        "trainer.log_every=3",
        "trainer.ckpt_every=3",
        "schedule.milestones=[2,4]",
    ),
    pytest_args=("-q", "--collect-only"),
    # Compiling takes a minute on a CPU: the dry run takes the compile paths with compilation off.
    env={"TORCH_COMPILE_DISABLE": "1", "OMP_NUM_THREADS": "1"},
)
