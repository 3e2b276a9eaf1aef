"""The prepared GPU check: one command that measures cnnbench on a GPU and says what passed.

Run through ``benchmarks/gpu_check.sh`` (it installs the carried wheels offline first), or directly once
cnnbench imports. Steps, each with a time budget inside one total budget; a step that fails, or finds no
time left, is recorded as such and the check goes on, so the summary is always written:

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

Then ``summary.json`` and ``summary.md`` (the issue's targets, measured, pass/fail, and the machine) in
``--out``, beside ``check.log`` (every command, its exit code, time and output tail), ``report.png`` and
``report.md``.

``--dry-run`` runs the same steps and command lines on the CPU with tiny sizes (``pytest --collect-only``
instead of running the cuda tests, digits data, k = 1, 2, compilation disabled through
``TORCH_COMPILE_DISABLE``) in a minute or two: the default test suite runs it (tests/test_gpu_check.py),
so the check cannot rot between GPU runs.

A helper mode, ``gpu_check.py worker ...``, is one training process of the jobs-per-GPU measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 1
PAPER_ITERS = 64_000  # iterations of one job of the paper's recipe
SWEEP_DEPTHS = (20, 32, 44, 56)  # the 8-network sweep: plain and ResNet at each depth
SUMMARY_JSON, SUMMARY_MD, LOG_NAME = "summary.json", "summary.md", "check.log"
STATUSES = ("ok", "failed", "skipped")
DRY_RUN_ENV = "CNNBENCH_GPU_CHECK_DRY_RUN"
REQUIRE_CUDA_ENV = "CNNBENCH_REQUIRE_CUDA"  # tests/test_cuda.py: fail instead of skipping without a GPU
CUDA_MARK = re.compile(r"pytest\.mark\.cuda\b")
TAIL_LINES = 25  # output lines of a command kept in check.log

# The targets, measured on the GPU (extrapolations from >= 500 timed steps after warm-up).
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


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[], dict[str, Any]]
    cap_s: float  # at most this long
    floor_s: float  # not started with less than this; later required steps keep theirs
    needs: tuple[str, ...] = ()
    optional: bool = False  # later steps reserve no time for an optional one


@dataclass
class StepResult:
    name: str
    status: str = "skipped"
    seconds: float = 0.0
    budget_s: float = 0.0
    reason: str | None = None
    commands: list[str] = field(default_factory=list)


class StepFailed(Exception):
    """The step ran and failed; the message says why (it goes to the summary)."""


class StepSkipped(Exception):
    """The step had nothing to do here; the message says why."""


@dataclass
class Finished:
    command: list[str]
    returncode: int | None  # None: killed at its time limit
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f} s"
        last = [line for line in (self.stderr or self.stdout).splitlines() if line.strip()][-3:]
        return f"exit code {self.returncode}: " + " | ".join(line.strip()[:300] for line in last)


# ----- the check ------------------------------------------------------------------------------------
class GpuCheck:
    def __init__(self, profile: Profile, out: Path, work: Path, python: str, install: dict[str, Any]):
        self.profile = profile
        self.out, self.work, self.python = out, work, python
        for folder in (out, work):
            folder.mkdir(parents=True, exist_ok=True)
        self.install = install
        self.started = time.monotonic() - float(install.get("seconds") or 0.0)
        self.deadline = self.started + profile.total_budget_s - 10.0  # 10 s to write the summary
        self.results: dict[str, Any] = {}
        self.steps: list[StepResult] = []
        self.current: StepResult | None = None
        self.step_deadline = self.deadline
        if profile.name == "dry-run":
            # The dry run's own cache (its jobs-per-GPU answer must not become a real machine's), seeded
            # with this machine's fast-path probe so that it is not measured again. This process writes
            # the jobs-per-GPU answer, its commands read it: both use it.
            os.environ["CNNBENCH_CACHE"] = str(seed_cache(work / "cache"))
        self.env = {**os.environ, **profile.env, "PYTHONUNBUFFERED": "1"}
        self.log = (out / LOG_NAME).open("a", encoding="utf-8")

    # ----- running commands ----------------------------------------------------------------------------
    def left(self) -> float:
        return self.step_deadline - time.monotonic()

    def command(self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None):
        """Run ``args`` (from the checkout) within the current step's time; its output goes to a file."""
        args = [str(a) for a in args]
        limit = max(min(timeout if timeout is not None else math.inf, self.left()), 1.0)
        if self.current is not None:
            self.current.commands.append(shlex.join(args))
        number = sum(len(s.commands) for s in self.steps) + (
            len(self.current.commands) if self.current else 0
        )
        stem = self.work / "logs" / f"{number:02d}-{self.current.name if self.current else 'cmd'}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        self._log(f"$ {shlex.join(args)}")
        finished = run_command(args, {**self.env, **(env or {})}, limit, stem)
        self._log(
            f"  -> {'timed out' if finished.returncode is None else f'exit {finished.returncode}'} "
            f"in {finished.seconds:.1f} s"
        )
        tail = (finished.stdout.splitlines() + finished.stderr.splitlines())[-TAIL_LINES:]
        if not finished.ok:
            tail = finished.stderr.splitlines()[-TAIL_LINES:] or tail
        for line in tail:
            self._log(f"  | {line[:400]}")
        return finished

    def python_command(self, args: Sequence[str], **kwargs: Any) -> Finished:
        return self.command([self.python, *args], **kwargs)

    def _log(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    # ----- steps -----------------------------------------------------------------------------------------
    def steps_plan(self) -> list[Step]:
        gpu = self.profile.name == "gpu"
        scale = 1.0 if gpu else 3.0  # a 2-core CPU is slower at starting processes than the GPU machine
        plan = [
            Step("environment", self.environment, 40 * scale, 5),
            Step("cuda_tests", self.cuda_tests, 130 * scale, 30, ("environment",)),
        ]
        for depth, caps in ((20, (45, 50, 150)), (56, (70, 60, 100))):
            name = f"resnet{depth}"
            plan += [
                Step(
                    f"candidates_{name}",
                    lambda d=depth: self.candidates(d),
                    caps[0] * scale,
                    20,
                    ("environment",),
                ),
                Step(
                    f"variants_{name}",
                    lambda d=depth: self.variants(d, compiled=False),
                    caps[1] * scale,
                    15,
                    (f"candidates_{name}",),
                ),
                Step(f"auto_{name}", lambda d=depth: self.auto(d), caps[2] * scale, 40, ("environment",)),
            ]
        plan += [
            Step("jobs_per_gpu", self.jobs_per_gpu, 110 * scale, 40, ("environment",)),
            Step("sweep_quick", self.sweep_quick, 100 * scale, 40, ("environment",)),
            Step("report", self.report, 40 * scale, 10, ("sweep_quick",)),
        ]
        for depth in (20, 56):
            plan.append(
                Step(
                    f"compiled_resnet{depth}",
                    lambda d=depth: self.variants(d, compiled=True),
                    120 * scale,
                    30,
                    (f"candidates_resnet{depth}",),
                    optional=True,
                )
            )
        return plan

    def run(self) -> int:
        self._log(f"# cnnbench GPU check ({self.profile.name}), {datetime.now(timezone.utc).isoformat()}")
        self.steps.append(
            StepResult(
                "install",
                self.install.get("status", "skipped"),
                float(self.install.get("seconds") or 0),
                0.0,
                self.install.get("reason"),
                list(self.install.get("commands") or []),
            )
        )
        plan = self.steps_plan()
        for i, step in enumerate(plan):
            reserved = sum(s.floor_s for s in plan[i + 1 :] if not s.optional)
            self.run_step(step, reserved)
        self.write_summary()
        self.log.close()
        return 0

    def run_step(self, step: Step, reserved: float) -> None:
        result = StepResult(step.name)
        self.steps.append(result)
        statuses = {s.name: s.status for s in self.steps}
        missing = [n for n in step.needs if statuses.get(n) != "ok"]
        budget = min(step.cap_s, self.deadline - time.monotonic() - reserved)
        if missing:
            result.reason = f"needs {', '.join(missing)}, which did not succeed"
        elif budget < step.floor_s:
            result.reason = f"the total budget ({self.profile.total_budget_s:.0f} s) is spent"
        if result.reason:
            self._log(f"\n## {step.name}: skipped ({result.reason})")
            return
        result.budget_s = round(budget, 1)
        self._log(f"\n## {step.name} (budget {budget:.0f} s)")
        self.current, self.step_deadline = result, time.monotonic() + budget
        start = time.monotonic()
        try:
            self.results[step.name] = step.run()
            result.status = "ok"
        except StepSkipped as exc:
            result.status, result.reason = "skipped", str(exc)
        except StepFailed as exc:
            result.status, result.reason = "failed", str(exc)
        except Exception as exc:  # a bug in a step must not cost the summary
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        result.seconds = round(time.monotonic() - start, 1)
        self.current, self.step_deadline = None, self.deadline
        self._log(
            f"## {step.name}: {result.status} in {result.seconds:.1f} s"
            + (f" ({result.reason})" if result.reason else "")
        )

    # 1. the machine -------------------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        info: dict[str, Any] = {"nvidia_smi": nvidia_smi(self)}
        done = self.python_command(["-c", ENV_PROBE, self.profile.device])
        if not done.ok:
            raise StepFailed(f"python could not describe the machine: {done.why()}")
        info.update(last_json(done.stdout))
        info["trainer_keys"] = trainer_keys()
        if "error" in info:
            raise StepFailed(info["error"])
        if self.profile.device == "cuda" and not info.get("cuda_available"):
            raise StepFailed(f"no CUDA GPU visible to torch {info.get('torch')} (CUDA {info.get('cuda')})")
        missing = [m for m, v in info.get("modules", {}).items() if str(v).startswith("missing")]
        if missing:
            raise StepFailed(f"not importable: {', '.join(missing)} (see the install step)")
        return info

    # 2. the CUDA tests -----------------------------------------------------------------------------------
    def cuda_tests(self) -> dict[str, Any]:
        files = cuda_test_files()
        if not files:
            raise StepFailed("no test file holds a cuda-marked test")
        junit = self.work / "cuda_tests.xml"
        args = ["-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", *self.profile.pytest_args]
        collect_only = "--collect-only" in self.profile.pytest_args
        if not collect_only:
            args += [f"--junitxml={junit}"]
        done = self.python_command([*args, *files])
        if collect_only:
            ids = [
                line.strip()
                for line in done.stdout.splitlines()
                if "::" in line and line.startswith("tests/")
            ]
            if not done.ok or not ids:
                raise StepFailed(f"collecting the cuda tests failed: {done.why()}")
            return {
                "files": files,
                "collected": len(ids),
                "tests": [{"id": i, "outcome": "collected"} for i in ids],
            }
        report = read_junit(junit) if junit.is_file() else read_verbose(done.stdout)
        report["files"] = files
        failed = [t["id"] for t in report["tests"] if t["outcome"] in ("failed", "error")]
        if done.returncode is None:
            raise StepFailed(f"pytest {done.why()}; finished before: {len(report['tests'])} tests")
        if failed or not done.ok:
            raise StepFailed(f"{len(failed)} failed: {', '.join(failed[:8])}" if failed else done.why())
        if not any(t["outcome"] == "passed" for t in report["tests"]):
            raise StepFailed("no cuda test ran (all skipped?)")
        return report

    # 3-5. benchmarks ---------------------------------------------------------------------------------
    def bench_common(self, depth: int) -> list[str]:
        p = self.profile
        return [
            "data=synthetic",
            "model=resnet",
            f"depth={depth}",
            f"trainer.batch_size={p.batch_size}",
            f"trainer.device={p.device}",
            f"trainer.max_iters={PAPER_ITERS}",  # the choices a 64k-iteration run makes (compile)
            *p.data_sizes,
        ]

    def compare(self, depth: int, variants: list[tuple[str, list[str]]]) -> dict[str, Any]:
        """``benchmarks/compare.py --json``: the variants' training steps, interleaved, in one process.

        If that fails (one variant that cannot build or capture on this GPU stops the whole command),
        each variant again on its own, while time is left: the others are still measured, and the
        failing one is recorded with its error.
        """
        try:
            return self._compare(depth, variants)
        except StepFailed as exc:
            if len(variants) == 1:
                raise
            self._log(f"  (all at once failed: {exc}; now one variant at a time)")
        measured: dict[str, Any] = {}
        for name, overrides in variants:
            try:
                measured.update(self._compare(depth, [(name, overrides)]))
            except StepFailed as exc:
                measured[name] = {"error": str(exc)}
        if not any("step_ms" in v for v in measured.values()):
            raise StepFailed(
                "no variant could be measured: " + "; ".join(v["error"] for v in measured.values())
            )
        return measured

    def _compare(self, depth: int, variants: list[tuple[str, list[str]]]) -> dict[str, Any]:
        p = self.profile
        args = ["benchmarks/compare.py", "--json", "--common", " ".join(self.bench_common(depth))]
        for name, overrides in variants:
            args += ["--variant", name, " ".join(overrides)]
        args += ["--iters", p.iters, "--repeats", p.repeats, "--warmup", p.warmup]
        done = self.python_command(args)
        if not done.ok:
            raise StepFailed(f"compare.py {done.why()}")
        measured = last_json(done.stdout)["variants"]
        for res in measured.values():
            res["timed_steps"] = p.iters * p.repeats
            res["est_64k_s"] = PAPER_ITERS * res["step_ms"] / 1e3
        return measured

    def candidates(self, depth: int) -> dict[str, Any]:
        """Every precision x layout candidate of the fast path, plain eager update (no graph, default
        optimizer), so only the candidate differs."""
        keys = self.results["environment"]["trainer_keys"]
        pinned = ["trainer.compile=false"] + [
            f"trainer.{k}=false" for k in ("cuda_graphs", "fused_optimizer") if k in keys
        ]
        variants = [
            (name, [*candidate_overrides(name), *pinned])
            for name in self.results["environment"]["candidates"]
        ]
        measured = self.compare(depth, variants)
        fastest = min((n for n in measured if "step_ms" in measured[n]), key=lambda n: measured[n]["step_ms"])
        return {"variants": measured, "fastest": fastest}

    def variants(self, depth: int, compiled: bool) -> dict[str, Any]:
        """The fastest candidate under each variant of the update (fused optimizer, CUDA graph; compiled
        or not), as the fast path's second stage chooses among them."""
        base = self.results[f"candidates_resnet{depth}"]["fastest"]
        keys = self.results["environment"]["trainer_keys"]
        variants = [
            (f"{base}+{name}", [*candidate_overrides(base), *overrides])
            for name, overrides in update_variants(keys, self.profile.device, compiled, base.split("/")[0])
        ]
        if not variants:
            raise StepSkipped("this tree has no such variant")
        return {"base": base, "variants": self.compare(depth, variants)}

    def auto(self, depth: int) -> dict[str, Any]:
        """`cnnbench bench --json` with the defaults: the settings `cnnbench train` would use."""
        p = self.profile
        args = [
            "-m",
            "cnnbench",
            "bench",
            "--json",
            "--no-baseline",
            *self.bench_common(depth),
            f"bench.iters={p.iters}",
            f"bench.repeats={p.repeats}",
            f"bench.warmup={p.warmup}",
            f"bench.eval_images={p.eval_images}",
        ]
        done = self.python_command(args)
        if not done.ok:
            raise StepFailed(f"cnnbench bench {done.why()}")
        result = last_json(done.stdout)
        result["timed_steps"] = result["iters"] * result["repeats"]
        result["est_64k_s"] = PAPER_ITERS * result["train_step_ms"] / 1e3
        # A 64k run also evaluates the 10k test images every trainer.eval_every (400) iterations.
        evals = PAPER_ITERS // 400
        result["est_64k_with_eval_s"] = result["est_64k_s"] + evals * 10_000 / result["eval_img_per_s"]
        return result

    # 6. several jobs per GPU -----------------------------------------------------------------------------
    def jobs_overrides(self) -> list[str]:
        p = self.profile
        # Uncompiled: eight processes compiling at once would take the step's whole budget.
        return [
            "data=synthetic",
            "model=resnet",
            "depth=20",
            f"trainer.batch_size={p.batch_size}",
            f"trainer.device={p.device}",
            "trainer.compile=false",
            *p.jobs_data,
        ]

    def jobs_per_gpu(self) -> dict[str, Any]:
        p = self.profile
        result: dict[str, Any] = {
            "workload": " ".join(self.jobs_overrides()),
            "seconds_per_window": p.jobs_seconds,
        }
        result["processes"] = self.concurrent_processes(self.work / "jobs-processes", {})
        result["mps"] = self.with_mps()
        try:
            result["streams"] = self.streams()
        except StepFailed as exc:
            result["streams"] = {"status": "failed", "reason": str(exc)}
        result["best"] = best_sharing(result)
        result["cache"] = self.record_jobs(result)
        return result

    def start_workers(self, folder: Path, env: dict[str, str]) -> list[subprocess.Popen]:
        p = self.profile
        folder.mkdir(parents=True, exist_ok=True)
        workers = []
        for index in range(max(p.jobs_ks)):
            args = [
                self.python,
                "benchmarks/gpu_check.py",
                "worker",
                "--dir",
                str(folder),
                "--index",
                str(index),
                "--phases",
                ",".join(map(str, p.jobs_ks)),
                "--seconds",
                str(p.jobs_seconds),
                "--warmup",
                str(p.jobs_warmup),
                "--",
                *self.jobs_overrides(),
                f"seed={index}",
            ]
            if index == 0 and self.current is not None:
                self.current.commands.append(shlex.join(args) + "  # x" + str(max(p.jobs_ks)))
                self._log(f"$ {shlex.join(args)}  (x{max(p.jobs_ks)}, --index 0..{max(p.jobs_ks) - 1})")
            with (folder / f"worker-{index}.log").open("w") as log:  # the child keeps its own copy
                workers.append(
                    subprocess.Popen(
                        args,
                        cwd=ROOT,
                        env={**self.env, **env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        return workers

    def concurrent_processes(self, folder: Path, env: dict[str, str]) -> dict[str, Any]:
        """k training processes at once for each k: their aggregate img/s against one alone."""
        p = self.profile
        workers = self.start_workers(folder, env)
        phases: dict[str, Any] = {}
        try:
            self.wait_for(folder, [f"ready-{i}.json" for i in range(len(workers))], workers, self.left() - 5)
            for k in p.jobs_ks:
                if self.left() < p.jobs_seconds + 10:
                    phases[str(k)] = {"status": "skipped", "reason": "the step's budget is spent"}
                    continue
                (folder / f"start-{k}.json").write_text(json.dumps({"t0": time.time() + 0.5}))
                names = [f"result-{k}-{i}.json" for i in range(k)]
                self.wait_for(folder, names, workers, p.jobs_seconds + 60)
                phases[str(k)] = aggregate([json.loads((folder / n).read_text()) for n in names])
        finally:
            for worker in workers:
                stop_process(worker)
            for i in range(len(workers)):
                self._log(f"  | worker {i}: " + " / ".join(tail_of(folder / f"worker-{i}.log", 2)))
        one = phases.get("1", {}).get("img_per_s")
        for phase in phases.values():
            if one and "img_per_s" in phase:
                phase["speedup_vs_one"] = phase["img_per_s"] / one
        return {"status": "ok", "k": phases}

    def wait_for(
        self, folder: Path, names: list[str], workers: list[subprocess.Popen], timeout: float
    ) -> None:
        end = time.monotonic() + max(timeout, 1.0)
        while not all((folder / n).is_file() for n in names):
            dead = [i for i, w in enumerate(workers) if w.poll() not in (None, 0)]
            if dead:
                lines = tail_of(folder / f"worker-{dead[0]}.log", 3)
                raise StepFailed(
                    f"worker {dead[0]} exited with {workers[dead[0]].returncode}: {' | '.join(lines)}"
                )
            if time.monotonic() > end:
                raise StepFailed(
                    f"timed out waiting for {', '.join(n for n in names if not (folder / n).is_file())}"
                )
            time.sleep(0.05)

    def with_mps(self) -> dict[str, Any]:
        """The same measurement under NVIDIA MPS, where its control daemon starts (then stopped again)."""
        control = shutil.which("nvidia-cuda-mps-control")
        if self.profile.device != "cuda" or control is None:
            return {"status": "skipped", "reason": "no nvidia-cuda-mps-control here"}
        if self.left() < 2 * self.profile.jobs_seconds + 40:
            return {"status": "skipped", "reason": "the step's budget is spent"}
        mps = self.work / "mps"
        env = {"CUDA_MPS_PIPE_DIRECTORY": str(mps / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(mps / "log")}
        for sub in ("pipe", "log"):
            (mps / sub).mkdir(parents=True, exist_ok=True)
        started = self.command([control, "-d"], env=env, timeout=20)
        if not started.ok:
            return {"status": "skipped", "reason": f"the MPS daemon did not start: {started.why()}"}
        try:
            return self.concurrent_processes(self.work / "jobs-mps", env)
        except StepFailed as exc:
            return {"status": "failed", "reason": str(exc)}
        finally:
            quit_mps(control, {**self.env, **env})
            self._log("  (MPS daemon told to quit)")

    def streams(self) -> dict[str, Any]:
        """k models on k CUDA streams of one process (k = the measured ks above 1, and 1 alone)."""
        p = self.profile
        if self.left() < p.jobs_seconds * len(p.jobs_ks) + 30:
            return {"status": "skipped", "reason": "the step's budget is spent"}
        ks = [k for k in p.jobs_ks if k <= 4]  # one Python thread launches for all: more do not help
        done = self.python_command(
            [
                "benchmarks/gpu_check.py",
                "worker",
                "--streams",
                "--phases",
                ",".join(map(str, ks)),
                "--seconds",
                str(p.jobs_seconds),
                "--warmup",
                str(p.jobs_warmup),
                "--",
                *self.jobs_overrides(),
            ]
        )
        if not done.ok:
            raise StepFailed(f"streams worker {done.why()}")
        phases = last_json(done.stdout)
        one = phases.get("1", {}).get("img_per_s")
        for phase in phases.values():
            if one:
                phase["speedup_vs_one"] = phase["img_per_s"] / one
        return {"status": "ok", "k": phases}

    def record_jobs(self, result: dict[str, Any]) -> dict[str, Any]:
        """Cache the best k per mechanism for this GPU model (``CNNBENCH_JOBS_PER_GPU=auto``)."""
        from cnnbench.engine import gpus

        measured = {}
        for mechanism in gpus.MECHANISMS:
            best = best_k(result.get(mechanism) or {})
            if best is not None:
                measured[mechanism] = best
        if not measured:
            raise StepFailed("no concurrent measurement finished")
        model = self.results["environment"].get("device_model") or "cpu"
        path = gpus.write_jobs_record(model, {**measured, "workload": result["workload"]})
        return {"path": str(path), "model": model, "auto_resolves_to": gpus.read_jobs_record(model)}

    # 7-8. the quick sweep, end to end ---------------------------------------------------------------------
    def sweep_quick(self) -> dict[str, Any]:
        p = self.profile
        sweep = self.work / "sweep"
        args = [
            "-m",
            "cnnbench",
            "train",
            "-m",
            "experiment=degradation_quick",
            f"trainer.device={p.device}",
            "hydra/launcher=gpus",
            f"hydra.sweep.dir={sweep}",
            *p.sweep_overrides,
        ]
        start = time.monotonic()
        done = self.python_command(args, env={"CNNBENCH_JOBS_PER_GPU": str(p.sweep_jobs_per_gpu)})
        wall = time.monotonic() - start
        jobs = read_sweep(sweep)
        n_jobs = re.search(r"Joblib\.Parallel\(n_jobs=(\d+)", done.stdout + done.stderr)
        result = {
            "dir": str(sweep),
            "wall_s": wall,
            "jobs": jobs,
            "jobs_per_gpu": p.sweep_jobs_per_gpu,
            "launcher_n_jobs": int(n_jobs.group(1)) if n_jobs else None,
        }
        completed = [j for j in jobs if j.get("status") == "completed"]
        if not done.ok or len(completed) < 4:
            raise StepFailed(f"{len(completed)} of 4 jobs completed; cnnbench train {done.why()}")
        return result

    def report(self) -> dict[str, Any]:
        sweep = Path(self.results["sweep_quick"]["dir"])
        out = self.work / "report"
        done = self.python_command(["-m", "cnnbench", "report", str(sweep), "--out", str(out)])
        if not done.ok or not (out / "report.md").is_file():
            raise StepFailed(f"cnnbench report {done.why()}")
        copied = []
        for name in ("report.png", "report.md"):
            if (out / name).is_file():
                shutil.copy2(out / name, self.out / name)
                copied.append(name)
        return {"files": copied, "table": (out / "report.md").read_text()[:4000]}

    # ----- the summary ------------------------------------------------------------------------------------
    def write_summary(self) -> None:
        total = time.monotonic() - self.started
        summary = build_summary(self.profile, self.steps, self.results, self.install, total)
        (self.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, default=str) + "\n")
        try:
            text = summary_markdown(summary)
        except Exception as exc:  # the JSON is written: a markdown bug must not hide it
            text = f"# cnnbench GPU check\n\nNo markdown ({type(exc).__name__}: {exc}); see {SUMMARY_JSON}.\n"
        (self.out / SUMMARY_MD).write_text(text)
        self._log(f"\n# done in {total:.1f} s: " + ", ".join(f"{s.name} {s.status}" for s in self.steps))


# ----- helpers of the steps ------------------------------------------------------------------------------
ENV_PROBE = r"""
import json, os, platform, sys
info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()}
modules = info["modules"] = {}
for name in ("hydra", "omegaconf", "hydra_plugins.hydra_joblib_launcher", "cnnbench"):
    try:
        module = __import__(name, fromlist=["_"])
        modules[name] = getattr(module, "__version__", None) or os.path.dirname(module.__file__)
    except Exception as exc:
        modules[name] = f"missing: {type(exc).__name__}: {exc}"
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["gpu_count"] = torch.cuda.device_count() if info["cuda_available"] else 0
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            info["nccl"] = None
    from cnnbench.engine import gpus
    from cnnbench.fastpath.resolve import candidates
    info["candidates"] = candidates(torch.device(sys.argv[1]))
    info["mps_running"] = gpus.mps_running()
    info["device_model"] = gpus.device_model()
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


def run_command(args: list[str], env: dict[str, str], timeout: float, stem: Path) -> Finished:
    """``args`` in a process group of its own (a timeout ends its children too: joblib workers,
    compile workers); stdout and stderr to ``stem``.out/.err."""
    start = time.monotonic()
    with open(f"{stem}.out", "w") as out, open(f"{stem}.err", "w") as err:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = None
    read = lambda suffix: Path(f"{stem}.{suffix}").read_text(errors="replace")  # noqa: E731
    return Finished(args, code, time.monotonic() - start, read("out"), read("err"))


def stop_process(proc: subprocess.Popen) -> None:
    """End ``proc`` and its process group: SIGTERM (cnnbench checkpoints), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def quit_mps(control: str, env: dict[str, str]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([control], input="quit\n", text=True, env=env, timeout=20, capture_output=True)


def nvidia_smi(check: GpuCheck) -> dict[str, Any] | None:
    """The GPUs as nvidia-smi sees them (name, driver, memory, compute capability); None without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    fields = "name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit"
    done = check.command([smi, f"--query-gpu={fields}", "--format=csv,noheader"], timeout=30)
    if not done.ok:
        return {"error": done.why()}
    rows = [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
    return {"gpus": [dict(zip(fields.split(","), row, strict=False)) for row in rows]}


def trainer_keys() -> list[str]:
    """The keys of conf/trainer/default.yaml: which fast-path knobs this tree has."""
    text = (ROOT / "conf" / "trainer" / "default.yaml").read_text()
    return re.findall(r"^([a-z_]+):", text, flags=re.MULTILINE)


def cuda_test_files() -> list[str]:
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(p.relative_to(ROOT)) for p in tests if CUDA_MARK.search(p.read_text(errors="replace"))]


def candidate_overrides(name: str) -> list[str]:
    """``bf16/channels_last`` -> the overrides that fix that candidate."""
    precision, layout = name.split("/")
    return [
        f"trainer.precision={precision}",
        f"trainer.channels_last={str(layout == 'channels_last').lower()}",
    ]


def update_variants(
    keys: Sequence[str], device: str, compiled: bool, precision: str
) -> list[tuple[str, list[str]]]:
    """The fast path's update variants this tree has (compile x fused optimizer x CUDA graph)."""
    fused = "fused_optimizer" in keys
    # Graphs: CUDA only, and not with fp16 (its GradScaler checks for infinities on the host).
    graphs = "cuda_graphs" in keys and device == "cuda" and precision != "fp16"
    prefix = "compiled" if compiled else "eager"
    base = [f"trainer.compile={str(compiled).lower()}"] + (["trainer.cuda_graphs=false"] if graphs else [])
    variants = [(f"{prefix}/foreach", [*base, "trainer.fused_optimizer=false"] if fused else base)]
    if fused:
        variants.append((f"{prefix}/fused", [*base, "trainer.fused_optimizer=true"]))
    if fused and graphs:
        graphed = [
            f"trainer.compile={str(compiled).lower()}",
            "trainer.fused_optimizer=true",
            "trainer.cuda_graphs=true",
        ]
        variants.append((f"{prefix}/fused+graphs", graphed))
    return variants


def read_junit(path: Path) -> dict[str, Any]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or "")[:500]
                break
        module = (case.get("classname") or "").replace(".", "/")
        tests.append(
            {
                "id": f"{module}.py::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": message,
            }
        )
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    return {**counts, "collected": len(tests), "tests": tests}


def read_verbose(text: str) -> dict[str, Any]:
    """The outcomes `pytest -v` printed, for a run stopped before it wrote its junit file."""
    tests = [
        {
            "id": test,
            "outcome": {"PASSED": "passed", "FAILED": "failed", "ERROR": "error"}.get(word, "skipped"),
        }
        for test, word in re.findall(
            r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL)", text, re.MULTILINE
        )
    ]
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    return {**counts, "collected": len(tests), "tests": tests}


def last_json(text: str) -> dict[str, Any]:
    """The JSON object a command printed (its last one; log lines may come before it)."""
    with contextlib.suppress(ValueError):
        return json.loads(text)
    starts = [m.start() for m in re.finditer(r"^\{", text, flags=re.MULTILINE)]
    for start in reversed(starts):
        with contextlib.suppress(ValueError):
            return json.loads(text[start:])
    raise StepFailed(f"no JSON in the output: {text[-300:]!r}")


def aggregate(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """k concurrent windows -> their total img/s (each job's images over its own window)."""
    rates = [w["images"] / w["seconds"] for w in windows]
    return {
        "img_per_s": sum(rates),
        "per_job_img_per_s": rates,
        "steps": [w["steps"] for w in windows],
        "seconds": [w["seconds"] for w in windows],
        "peak_memory_mb": max((w.get("peak_memory_mb") or 0) for w in windows),
    }


def best_k(measured: dict[str, Any], tolerance: float = 0.03) -> dict[str, Any] | None:
    """The fewest jobs per GPU within ``tolerance`` of the best aggregate img/s (fewer jobs: less
    memory, and a win inside the noise is no win)."""
    phases = {int(k): v for k, v in (measured.get("k") or {}).items() if "img_per_s" in v}
    if not phases:
        return None
    top = max(v["img_per_s"] for v in phases.values())
    k = min(k for k, v in phases.items() if v["img_per_s"] >= top * (1 - tolerance))
    return {
        "jobs_per_gpu": k,
        "img_per_s": phases[k]["img_per_s"],
        "speedup_vs_one": phases[k].get("speedup_vs_one"),
    }


def best_sharing(result: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest way to share the GPU among the measured mechanisms (processes, MPS, streams)."""
    options = [
        (mechanism, best_k(result.get(mechanism) or {})) for mechanism in ("processes", "mps", "streams")
    ]
    options = [(m, b) for m, b in options if b is not None]
    if not options:
        return None
    mechanism, best = max(options, key=lambda item: item[1]["img_per_s"])
    return {"mechanism": mechanism, **best}


def read_sweep(sweep: Path) -> list[dict[str, Any]]:
    jobs = []
    for metrics_path in sorted(sweep.rglob("metrics.json")):
        with contextlib.suppress(OSError, ValueError):
            metrics = json.loads(metrics_path.read_text())
            env_path = metrics_path.with_name("env.json")
            env = json.loads(env_path.read_text()) if env_path.is_file() else {}
            jobs.append(
                {
                    "job": str(metrics_path.parent.relative_to(sweep)),
                    **{
                        k: metrics.get(k)
                        for k in ("status", "iteration", "train_error", "test_error", "elapsed_seconds")
                    },
                    "device": env.get("device"),
                    "fast_path": env.get("fast_path"),
                    "gpu_sharing": env.get("gpu_sharing"),
                }
            )
    return jobs


def tail_of(path: Path, lines: int) -> list[str]:
    try:
        return [line.strip()[:300] for line in path.read_text(errors="replace").splitlines() if line.strip()][
            -lines:
        ]
    except OSError:
        return []


def seed_cache(folder: Path) -> Path:
    """A fresh cnnbench cache holding a copy of the current one's fast-path probe (fastpath.json)."""
    from_env = os.environ.get("CNNBENCH_CACHE")
    current = (
        Path(from_env).expanduser()
        if from_env
        else Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cnnbench"
    )
    folder.mkdir(parents=True, exist_ok=True)
    if (current / "fastpath.json").is_file():
        shutil.copy2(current / "fastpath.json", folder / "fastpath.json")
    return folder


# ----- the summary -----------------------------------------------------------------------------------
def machine_of(env: dict[str, Any]) -> dict[str, Any]:
    smi = ((env.get("nvidia_smi") or {}).get("gpus") or [{}])[0]
    return {
        "gpu": env.get("gpu") or smi.get("name"),
        "gpu_count": env.get("gpu_count"),
        "driver": smi.get("driver_version"),
        "gpu_memory": smi.get("memory.total"),
        "compute_capability": env.get("capability") or smi.get("compute_cap"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "nccl": env.get("nccl"),
        "python": env.get("python"),
        "cpu_count": env.get("cpu_count"),
        "platform": env.get("platform"),
        "mps_running_at_start": env.get("mps_running"),
    }


def step_ms(results: dict[str, Any], depth: int) -> tuple[float | None, str | None]:
    """ResNet-<depth>'s measured training step: `auto` (what `cnnbench train` runs), else the fastest
    candidate; and which it was."""
    auto = results.get(f"auto_resnet{depth}")
    if auto:
        return auto["train_step_ms"], "auto"
    cands = results.get(f"candidates_resnet{depth}")
    if cands:
        return cands["variants"][cands["fastest"]]["step_ms"], f"candidate {cands['fastest']}"
    return None, None


def sweep_estimates(results: dict[str, Any]) -> dict[str, Any]:
    """The 8-network sweep's time, one job at a time and with jobs sharing the GPU, from the measured
    ResNet-20 and ResNet-56 steps (32 and 44 interpolated linearly in depth; a plain net of a depth
    taken as its ResNet: the same convolutions, no shortcut additions) and the measured sharing speed-up."""
    t20, source20 = step_ms(results, 20)
    t56, source56 = step_ms(results, 56)
    if t20 is None or t56 is None:
        return {}
    per_depth = {d: t20 + (t56 - t20) * (d - 20) / 36 for d in SWEEP_DEPTHS}
    one_at_a_time = sum(2 * PAPER_ITERS * ms / 1e3 for ms in per_depth.values())
    out: dict[str, Any] = {
        "step_ms_by_depth": per_depth,
        "sources": [source20, source56],
        "one_at_a_time_s": one_at_a_time,
    }
    best = (results.get("jobs_per_gpu") or {}).get("best")
    if best and best.get("speedup_vs_one"):
        out["shared_s"] = one_at_a_time / best["speedup_vs_one"]
        out["sharing"] = best
    return out


def evaluate_targets(profile: Profile, results: dict[str, Any], total_s: float) -> list[dict[str, Any]]:
    sweep = sweep_estimates(results)
    measured = {
        "resnet20_64k_s": step_ms(results, 20)[0],
        "resnet56_64k_s": step_ms(results, 56)[0],
        "sweep_shared_s": sweep.get("shared_s"),
        "sweep_one_at_a_time_s": sweep.get("one_at_a_time_s"),
        "loop_overhead_resnet20_pct": (results.get("auto_resnet20") or {}).get("loop_overhead_pct"),
        "loop_overhead_resnet56_pct": (results.get("auto_resnet56") or {}).get("loop_overhead_pct"),
        "check_total_s": total_s,
    }
    for key in ("resnet20_64k_s", "resnet56_64k_s"):
        if measured[key] is not None:
            measured[key] = PAPER_ITERS * measured[key] / 1e3
    targets = []
    for key, (what, limit, unit) in TARGETS.items():
        value = measured[key]
        applies = profile.name == "gpu"
        targets.append(
            {
                "key": key,
                "what": what,
                "limit": limit,
                "unit": unit,
                "measured": value,
                "pass": (value <= limit) if applies and value is not None else None,
                "note": None if applies else "dry run: CPU and tiny sizes, not a measurement",
            }
        )
    return targets


def build_summary(
    profile: Profile,
    steps: list[StepResult],
    results: dict[str, Any],
    install: dict[str, Any],
    total_s: float,
) -> dict[str, Any]:
    env = results.get("environment") or {}
    return {
        "schema": SCHEMA_VERSION,
        "mode": profile.name,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": round(total_s, 1),
        "budget_seconds": profile.total_budget_s,
        "install": install,
        "machine": machine_of(env),
        "profile": asdict(profile),
        "steps": [asdict(s) for s in steps],
        "targets": evaluate_targets(profile, results, total_s),
        "sweep_estimate": sweep_estimates(results),
        "results": results,
    }


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def summary_markdown(summary: dict[str, Any]) -> str:
    m, r = summary["machine"], summary["results"]
    dry = summary["mode"] != "gpu"
    title = "# cnnbench GPU check" + (
        " (DRY RUN: CPU, tiny sizes; no figure here is a measurement)" if dry else ""
    )
    lines = [
        title,
        "",
        f"Machine: {m['gpu'] or 'no GPU'} (x{m['gpu_count'] or 0}, compute capability "
        f"{_fmt(m['compute_capability'])}, {_fmt(m['gpu_memory'])}), driver {_fmt(m['driver'])}; "
        f"torch {_fmt(m['torch'])}, CUDA {_fmt(m['cuda'])}, cuDNN {_fmt(m['cudnn'])}, "
        f"NCCL {_fmt(m['nccl'])}; "
        f"Python {_fmt(m['python'])}, {_fmt(m['cpu_count'])} CPUs. Finished {summary['finished_at']}, "
        f"{summary['total_seconds']:.0f} s in all (budget {summary['budget_seconds']:.0f} s).",
        "",
        "## Targets",
        "",
        "| target | limit | measured | pass |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in summary["targets"]:
        verdict = {True: "**pass**", False: "**FAIL**", None: "n/a"}[t["pass"]]
        measured = _fmt(t["measured"], " " + t["unit"])
        lines.append(f"| {t['what']} | {t['limit']:g} {t['unit']} | {measured} | {verdict} |")
    est = summary["sweep_estimate"]
    if est:
        lines += [
            "",
            f"64k-iteration times are the measured median training step x 64,000 (from "
            f"{', '.join(est['sources'])}); the sweep's depths 32 and 44 are interpolated linearly between "
            f"20 and 56, plain nets taken as their ResNet; the shared sweep divides by the best measured "
            f"sharing speed-up ({_fmt((est.get('sharing') or {}).get('speedup_vs_one'), 'x', 2)}, "
            f"{(est.get('sharing') or {}).get('mechanism', '–')}, "
            f"k = {(est.get('sharing') or {}).get('jobs_per_gpu', '–')}, uncompiled ResNet-20 jobs).",
        ]
    lines += [
        "",
        "## Steps",
        "",
        "| step | status | seconds | budget | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for s in summary["steps"]:
        note = (s["reason"] or "").replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']:.0f} | {note} |")
    lines += _bench_tables(r) + _jobs_tables(r.get("jobs_per_gpu")) + _sweep_table(r.get("sweep_quick"))
    lines += _tests_table(r.get("cuda_tests"))
    lines += [
        "",
        "Commands, exit codes and output tails: check.log. How these figures go into README.md and "
        'docs/performance.md: docs/performance.md, "The GPU check".',
        "",
    ]
    return "\n".join(lines)


def _bench_tables(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Training step by fast-path candidate (batch 128, synthetic CIFAR-sized data)",
        "",
        "| net | candidate | ms / step | img/s | 64k iterations | timed steps | first step s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for depth in (20, 56):
        for step in (f"candidates_resnet{depth}", f"variants_resnet{depth}", f"compiled_resnet{depth}"):
            for name, v in ((r.get(step) or {}).get("variants") or {}).items():
                if "step_ms" not in v:
                    lines.append(f"| ResNet-{depth} | {name} | failed: {v.get('error', '')[:200]} | | | | |")
                    continue
                first = _fmt((v.get("warmup_s") or [None])[0])
                lines.append(
                    f"| ResNet-{depth} | {name} | {v['step_ms']:.2f} | {v['img_per_s']:,.0f} | "
                    f"{v['est_64k_s']:,.0f} s | {v['timed_steps']} | {first} |"
                )
    lines += [
        "",
        "## `cnnbench bench` with the defaults (`auto`)",
        "",
        "| net | fast path | step ms | pure step ms | loop overhead | input ms | eval img/s | 64k (+ eval) "
        "| peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for depth in (20, 56):
        a = r.get(f"auto_resnet{depth}")
        if not a:
            continue
        fp = a.get("fast_path") or {}
        path = ", ".join(f"{k}={v}" for k, v in fp.items() if k not in ("timings_ms", "variant_timings_ms"))
        cells = [
            _fmt(a.get("train_step_ms"), "", 2),
            _fmt(a.get("pure_step_ms"), "", 2),
            _fmt(a.get("loop_overhead_pct"), "%"),
            _fmt(a.get("input_ms"), "", 2),
            _fmt(a.get("eval_img_per_s"), "", 0),
            f"{_fmt(a.get('est_64k_s'), ' s', 0)} ({_fmt(a.get('est_64k_with_eval_s'), ' s', 0)})",
            _fmt(a.get("peak_memory_mb"), "", 0),
        ]
        lines.append(f"| ResNet-{depth} | {path} | " + " | ".join(cells) + " |")
    return lines


def _jobs_tables(jobs: dict[str, Any] | None) -> list[str]:
    if not jobs:
        return []
    lines = [
        "",
        "## Several jobs per GPU (aggregate img/s of k concurrent ResNet-20 jobs)",
        "",
        f"Workload: `{jobs.get('workload')}`, {_fmt(jobs.get('seconds_per_window'))} s windows.",
        "",
        "| mechanism | k | aggregate img/s | vs one job alone | per job img/s | peak MiB per job |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for mechanism in ("processes", "mps", "streams"):
        measured = jobs.get(mechanism) or {}
        if measured.get("status") != "ok":
            lines.append(
                f"| {mechanism} | | | | {measured.get('status', '–')}: {measured.get('reason', '')} | |"
            )
            continue
        for k, v in measured["k"].items():
            if "img_per_s" not in v:
                lines.append(f"| {mechanism} | {k} | | | {v.get('status')}: {v.get('reason')} | |")
                continue
            per_job = ", ".join(f"{x:,.0f}" for x in v.get("per_job_img_per_s", []))
            lines.append(
                f"| {mechanism} | {k} | {v['img_per_s']:,.0f} | {_fmt(v.get('speedup_vs_one'), 'x', 2)} | "
                f"{per_job} | {_fmt(v.get('peak_memory_mb'), '', 0)} |"
            )
    best = jobs.get("best")
    if best:
        lines += [
            "",
            f"Fastest: {best['mechanism']}, k = {best['jobs_per_gpu']} "
            f"({_fmt(best.get('speedup_vs_one'), 'x', 2)} one job alone). Cached for "
            f"`CNNBENCH_JOBS_PER_GPU=auto`: {json.dumps((jobs.get('cache') or {}).get('auto_resolves_to'))}.",
        ]
    return lines


def _sweep_table(sweep: dict[str, Any] | None) -> list[str]:
    if not sweep:
        return []
    lines = [
        "",
        f"## Quick degradation sweep, end to end ({sweep['wall_s']:.1f} s, "
        f"{sweep['jobs_per_gpu']} jobs at once per GPU, launcher n_jobs {sweep.get('launcher_n_jobs')})",
        "",
        "| job | status | iterations | train error | test error | seconds | device | sharing |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for j in sweep["jobs"]:
        lines.append(
            f"| {j['job']} | {j['status']} | {j['iteration']} | {_fmt(j['train_error'], '', 4)} | "
            f"{_fmt(j['test_error'], '', 4)} | {_fmt(j['elapsed_seconds'])} | {j['device']} | "
            f"{json.dumps(j['gpu_sharing'])} |"
        )
    return lines


def _tests_table(tests: dict[str, Any] | None) -> list[str]:
    if not tests:
        return []
    lines = [
        "",
        f"## CUDA tests ({', '.join(tests['files'])})",
        "",
        "| test | outcome | seconds |",
        "| --- | --- | ---: |",
    ]
    for t in tests["tests"]:
        lines.append(f"| {t['id']} | {t['outcome']} | {_fmt(t.get('seconds'))} |")
    return lines


# ----- worker: one training process of the jobs-per-GPU measurement ---------------------------------------
def worker(args: argparse.Namespace) -> int:
    """Build the parts, warm up, then train in the phases it belongs to (index < k), each phase started
    by the driver's ``start-<k>.json`` (a wall-clock time), for ``seconds``; ``--streams``: k models on
    their own CUDA streams in this one process instead, results printed as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch

    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.parts import build_parts
    from cnnbench.engine.step import TrainStep

    phases = [int(k) for k in args.phases.split(",")]
    count = max(phases) if args.streams else 1
    models = []
    for j in range(count):
        parts = build_parts(
            compose_config([*args.overrides, f"seed={j}"] if args.streams else args.overrides)
        )
        stream = torch.cuda.Stream(parts.device) if parts.device.type == "cuda" else None
        models.append((parts, TrainStep(parts), stream))
    device = models[0][0].device
    sync(device)  # the data and weights were made on the default stream: done before other streams use them
    counter = [0]

    def step(j: int) -> None:
        parts, train_step, stream = models[j]
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            train_step(counter[0])

    for _ in range(args.warmup):
        for j in range(count):
            step(j)
        counter[0] += 1
    sync(device)
    batch = models[0][0].batch_size
    if args.streams:
        print(
            json.dumps(
                {str(k): streams_window(step, k, args.seconds, batch, device, counter) for k in phases}
            )
        )
        return 0
    folder = Path(args.dir)
    ready = {"pid": os.getpid(), "device": str(device), "fast_path": models[0][0].fast_path.record()}
    (folder / f"ready-{args.index}.json").write_text(json.dumps(ready, default=str))
    for k in phases:
        if args.index >= k:
            continue
        t0 = wait_for_start(folder / f"start-{k}.json")
        time.sleep(max(t0 - time.time(), 0.0))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps, seconds = timed_window(lambda: step(0), args.seconds, device, counter)
        window = {
            "steps": steps,
            "seconds": seconds,
            "images": steps * batch,
            "peak_memory_mb": peak_mb(device),
        }
        (folder / f"result-{k}-{args.index}.json").write_text(json.dumps(window))
    return 0


def timed_window(
    step: Callable[[], None], seconds: float, device: Any, counter: list[int]
) -> tuple[int, float]:
    """Steps until ``seconds`` have passed, then a device sync: the work queued by then counts, and its
    time too."""
    start = time.perf_counter()
    end = start + seconds
    steps = 0
    while time.perf_counter() < end:
        step()
        counter[0] += 1
        steps += 1
    sync(device)
    return steps, time.perf_counter() - start


def streams_window(
    step: Callable[[int], None], k: int, seconds: float, batch: int, device: Any, counter: list[int]
) -> dict[str, Any]:
    def round_robin() -> None:
        for j in range(k):
            step(j)

    rounds, elapsed = timed_window(round_robin, seconds, device, counter)
    return {
        "img_per_s": rounds * k * batch / elapsed,
        "steps": rounds * k,
        "seconds": elapsed,
        "peak_memory_mb": peak_mb(device),
    }


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def wait_for_start(path: Path, timeout: float = 900.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return float(json.loads(path.read_text())["t0"])
        time.sleep(0.002)
    raise SystemExit(f"no {path.name} in {timeout:.0f} s")


# ----- command line -------------------------------------------------------------------------------------
def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    sys.path.insert(0, str(ROOT))
    return GpuCheck(profile, out, work.resolve(), args.python, install_record(args.install)).run()


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
