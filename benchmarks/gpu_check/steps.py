"""The GPU check's steps, in the order the check runs them: what each one runs and what it records."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .outputs import (
    aggregate,
    best_k,
    best_sharing,
    last_json,
    read_junit,
    read_sweep,
    read_verbose,
    tail_of,
)
from .profiles import CUDA_MARK, PAPER_ITERS, ROOT
from .runner import CheckRunner, Step, StepFailed, StepSkipped, stop_process


class GpuCheck(CheckRunner):
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
                "-m",
                "benchmarks.gpu_check",
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
                "-m",
                "benchmarks.gpu_check",
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
        from cnnbench.launchers.measured import MECHANISMS, read_jobs_record, write_jobs_record

        measured = {}
        for mechanism in MECHANISMS:
            best = best_k(result.get(mechanism) or {})
            if best is not None:
                measured[mechanism] = best
        if not measured:
            raise StepFailed("no concurrent measurement finished")
        model = self.results["environment"].get("device_model") or "cpu"
        path = write_jobs_record(model, {**measured, "workload": result["workload"]})
        return {"path": str(path), "model": model, "auto_resolves_to": read_jobs_record(model)}

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
    from cnnbench.fastpath.probe import candidates
    from cnnbench.launchers.measured import device_model
    from cnnbench.launchers.mps import mps_running
    info["candidates"] = candidates(torch.device(sys.argv[1]))
    info["mps_running"] = mps_running()
    info["device_model"] = device_model()
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


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
