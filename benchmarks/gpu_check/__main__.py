"""The prepared GPU check: one command that measures cnnbench on a GPU and says what passed.

Run through ``benchmarks/gpu_check.sh`` (it installs the carried wheels offline first), or directly once
cnnbench imports, from the top of the checkout: ``python -m benchmarks.gpu_check [--dry-run] ...``.
Steps, each with a time budget inside one total budget; a step that fails, or finds no time left, is
recorded as such and the check goes on, so the summary is always written:

1. ``environment``: nvidia-smi, the GPU, driver, torch / CUDA / cuDNN / NCCL, the fast-path candidates;
2. ``cuda_tests``: ``pytest -m cuda`` over the test files that hold cuda-marked tests;
3. ``candidates_resnet<d>``: the real training step (``benchmarks/compare.py``, interleaved) of ResNet-20
   and ResNet-56 under each precision / memory-layout candidate, eager;
4. ``variants_resnet<d>``: the fastest candidate under each uncompiled variant of the update (fused
   optimizer, CUDA graph), then ``compiled_resnet<d>`` the compiled ones (last: compiling is slow);
5. ``auto_resnet<d>``: ``cnnbench bench --json`` with the defaults (what `cnnbench train` runs): step,
   pure step, loop overhead, evaluation, memory; every step time is extrapolated to 64k iterations;
6. ``jobs_per_gpu``: k = 1, 2, 4, 8 concurrent training processes on the GPU (and under NVIDIA MPS where
   its daemon starts, and k models on k CUDA streams of one process): aggregate img/s against one job
   alone; the best k is cached for ``CNNBENCH_JOBS_PER_GPU=auto`` (``hydra/launcher=gpus``);
7. ``sweep_quick``: ``cnnbench train -m experiment=degradation_quick`` end to end, jobs sharing the GPU;
8. ``report``: ``cnnbench report`` on that sweep.

Then ``summary.json`` and ``summary.md`` (cnnbench's performance targets, measured, pass/fail, and the
machine) in ``--out``, beside ``check.log`` (every command, its exit code, time and output tail),
``report.png`` and ``report.md``.

``--dry-run`` runs the same steps and command lines on the CPU with tiny sizes (``pytest --collect-only``
instead of running the cuda tests, digits data, k = 1, 2, compilation disabled through
``TORCH_COMPILE_DISABLE``) in a minute or two: the default test suite runs it (tests/test_gpu_check.py),
so the check cannot rot between GPU runs.

A helper mode, ``python -m benchmarks.gpu_check worker ...``, is one training process of the
jobs-per-GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .profiles import DRY_RUN, DRY_RUN_ENV, GPU, STEPS_ENV, Profile
from .steps import GpuCheck
from .worker import worker

# The parts: profiles (sizes, targets), runner (steps within budgets, commands, check.log), steps (the
# steps), outputs (reading what the commands wrote), summary (summary.json / summary.md) and worker (the
# worker mode).


# ----- command line -------------------------------------------------------------------------------------
def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode")
    check = sub.add_parser("check", help="the check (the default)")
    check.add_argument(
        "--dry-run", action="store_true", help=f"on the CPU with tiny sizes (or {DRY_RUN_ENV}=1)"
    )
    check.add_argument(
        "--out", type=Path, default=None, help="summary folder (default: $OUT, else ./gpu-check)"
    )
    check.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a new temporary one)"
    )
    check.add_argument("--python", default=sys.executable, help="the interpreter for every command")
    check.add_argument("--budget", type=float, default=None, help="total seconds, install included")
    check.add_argument("--install", default=None, help="the install step's record (JSON, from gpu_check.sh)")
    check.add_argument(
        "--steps",
        default=None,
        help=f"only these steps, comma-separated (or {STEPS_ENV}=...); the others are recorded as skipped",
    )
    work = sub.add_parser("worker", help="one process of the jobs-per-GPU measurement")
    work.add_argument("--dir", default=".")
    work.add_argument("--index", type=int, default=0)
    work.add_argument("--phases", default="1")
    work.add_argument("--seconds", type=float, default=5.0)
    work.add_argument("--warmup", type=int, default=10)
    work.add_argument("--streams", action="store_true")
    work.add_argument("overrides", nargs="*")
    argv = list(argv)
    if not argv or argv[0] not in ("check", "worker", "-h", "--help"):
        argv.insert(0, "check")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.mode == "worker":
        return worker(args)
    dry = args.dry_run or os.environ.get(DRY_RUN_ENV, "") not in ("", "0")
    profile = DRY_RUN if dry else GPU
    if args.budget is not None:
        profile = Profile(**{**asdict(profile), "total_budget_s": args.budget})
    out = Path(args.out or os.environ.get("OUT") or "gpu-check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile_dir())
    work.mkdir(parents=True, exist_ok=True)
    steps = args.steps if args.steps is not None else os.environ.get(STEPS_ENV, "")
    only = steps.replace(",", " ").split() or None
    return GpuCheck(profile, out, work.resolve(), args.python, install_record(args.install), only).run()


def install_record(text: str | None) -> dict[str, Any]:
    """The install step's record from gpu_check.sh (JSON); a garbled one is kept as the reason."""
    if not text:
        return {"status": "skipped", "reason": "not run by gpu_check.sh"}
    try:
        record = json.loads(text, strict=False)  # strict=False: a control character in pip's message
    except ValueError:
        return {"status": "failed", "reason": f"unreadable install record: {text[:300]}"}
    return record if isinstance(record, dict) else {"status": "failed", "reason": str(record)[:300]}


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="cnnbench-gpu-check-")


if __name__ == "__main__":
    raise SystemExit(main())
