"""The prepared GPU check (benchmarks/gpu_check.sh) in its dry run: every step, on the CPU, tiny sizes.

GPU time is scarce, so the check must work the first time it meets a GPU. Its dry run takes the same
steps and command lines (install from wheels, pytest -m cuda, compare.py and `cnnbench bench` per
candidate, concurrent worker processes, the quick sweep through hydra/launcher=gpus, the report, the
summary) with the sizes and the device changed; these tests run it and check what it wrote. The default
suite runs a short dry run (``--steps``: the machine and the jobs per GPU, with a made-up fast-path
answer so that no command probes): the script, its parts, the offline install, the worker processes and
the summary. Every step (two minutes of process starts on a CPU) is ``slow``. The judging of targets and
the markdown of a GPU run are checked on made-up results below.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.sh"
STEPS = [
    "install",
    "environment",
    "cuda_tests",
    "candidates_resnet20",
    "variants_resnet20",
    "auto_resnet20",
    "candidates_resnet56",
    "variants_resnet56",
    "auto_resnet56",
    "jobs_per_gpu",
    "sweep_quick",
    "report",
    "compiled_resnet20",
    "compiled_resnet56",
]
# The default suite's short dry run: the script end to end with the fewest process starts.
SHORT_STEPS = ["environment", "jobs_per_gpu"]
# What comes back from the GPU machine: at most 8 files, no folders.
OUT_FILES = {"summary.json", "summary.md", "check.log", "report.png", "report.md"}
INFO = "cnnbench_wheel_probe-0.0.1.dist-info"


def part(name: str = "") -> ModuleType:
    """The check's command line, benchmarks/gpu_check/__main__.py (``part()``), or one of its modules
    (``part("summary")``), imported as ``python -m benchmarks.gpu_check`` from the checkout imports them."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # the checkout, as the current folder of `python -m`
    return importlib.import_module(f"benchmarks.gpu_check.{name or '__main__'}")


def tiny_wheel(folder: Path) -> Path:
    """A valid pure-Python wheel, so the dry run's offline install runs the GPU machine's pip command."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "cnnbench_wheel_probe/__init__.py": b"WHEEL_PROBE = True\n",
        f"{INFO}/METADATA": b"Metadata-Version: 2.1\nName: cnnbench-wheel-probe\nVersion: 0.0.1\n",
        f"{INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    record.append(f"{INFO}/RECORD,,")
    path = folder / "cnnbench_wheel_probe-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{INFO}/RECORD", "\n".join(record) + "\n")
    return path


def seed_fast_path(cache: Path) -> None:
    """A fast-path answer for this machine as the dry run's commands see it (one thread), so that none of
    them probes (12 s or more each on a busy CPU; the probe is cnnbench's, tested with it)."""
    import torch

    from cnnbench.fastpath import choice, probe

    threads = int(part("profiles").DRY_RUN.env["OMP_NUM_THREADS"])
    key = {**probe.machine_key(torch.device("cpu")), "threads": threads}
    entry = {
        "machine": key,
        "timings_ms": {name: 10.0 for name in probe.candidates(torch.device("cpu"))},
        "choice": "fp32/nchw",
        "probe_seconds": 0.0,
        "other_cpu_pct": 0.0,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    cache.mkdir(parents=True, exist_ok=True)
    entries = {json.dumps(key, sort_keys=True): entry}
    (cache / choice.CACHE_FILE).write_text(json.dumps({"entries": entries}))


def run_dry(root: Path, steps: list[str] | None = None) -> tuple[Path, dict, str]:
    """benchmarks/gpu_check.sh's dry run into ``root`` (``steps``: only those, without probing)."""
    tiny_wheel(root / "wheels")
    env = {
        **os.environ,
        "CNNBENCH_PYTHON": sys.executable,
        "CNNBENCH_WHEELS": str(root / "wheels"),
        "CNNBENCH_GPU_CHECK_WORK": str(root / "work"),
        "CNNBENCH_GPU_CHECK_DRY_RUN": "1",
    }
    env.pop("OUT", None)
    env.pop("CNNBENCH_GPU_CHECK_STEPS", None)
    if steps is not None:
        seed_fast_path(root / "cache")
        env.update(CNNBENCH_GPU_CHECK_STEPS=",".join(steps), CNNBENCH_CACHE=str(root / "cache"))
    result = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(root / "out")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    log = (root / "out" / "check.log").read_text() if (root / "out" / "check.log").is_file() else ""
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{log[-6000:]}"
    summary = json.loads((root / "out" / "summary.json").read_text())
    return root, summary, log


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    return run_dry(tmp_path_factory.mktemp("gpu-check-short"), SHORT_STEPS)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return run_dry(tmp_path_factory.mktemp("gpu-check"))


# ----- the short dry run (default suite) ------------------------------------------------------------
def test_the_selected_steps_run_and_succeed_and_the_others_are_recorded_as_skipped(short_run):
    _, summary, log = short_run
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == STEPS
    failed = {name: s["reason"] for name, s in steps.items() if name in SHORT_STEPS and s["status"] != "ok"}
    assert not failed, f"{failed}\n{log[-6000:]}"
    for name in SHORT_STEPS:
        assert steps[name]["seconds"] > 0 and steps[name]["budget_s"] >= steps[name]["seconds"]
    for name in set(STEPS) - {"install", *SHORT_STEPS}:
        assert steps[name]["status"] == "skipped" and steps[name]["reason"] == "not selected (--steps)"
        assert f"## {name}: skipped (not selected)" in log
    assert "Measuring the fastest settings" not in log  # the seeded fast path: no command probed


def test_the_summary_has_its_schema(short_run):
    root, summary, _ = short_run
    assert summary["schema"] == 1 and summary["mode"] == "dry-run"
    assert {
        "finished_at",
        "total_seconds",
        "budget_seconds",
        "install",
        "machine",
        "profile",
        "steps",
    } <= set(summary)
    assert {"gpu", "driver", "torch", "cuda", "cudnn", "python", "cpu_count"} <= set(summary["machine"])
    assert summary["machine"]["torch"]
    assert [t["key"] for t in summary["targets"]] == list(part("profiles").TARGETS)
    measured = {t["key"]: t["measured"] for t in summary["targets"]}
    assert measured.pop("check_total_s") > 0
    assert set(measured.values()) == {None}  # no training step measured in the short run
    for target in summary["targets"]:
        assert target["pass"] is None and "dry run" in target["note"]  # ... and no verdict in a dry run
    assert summary["sweep_estimate"] == {}  # it needs ResNet-20 and ResNet-56
    assert {p.name for p in (root / "out").iterdir()} == {"summary.json", "summary.md", "check.log"}


def test_the_install_is_the_offline_wheel_install(short_run):
    root, summary, _ = short_run
    install = summary["install"]
    assert install["status"] == "ok" and install["seconds"] > 0
    command = install["commands"][0]
    for flag in ("--no-index", "--no-deps", "--target", "cnnbench_wheel_probe-0.0.1-py3-none-any.whl"):
        assert flag in command
    assert (root / "work" / "site" / "cnnbench_wheel_probe" / "__init__.py").is_file()


def test_concurrent_jobs_are_measured_and_the_best_k_is_cached_in_the_runs_own_cache(short_run):
    root, summary, _ = short_run
    jobs = summary["results"]["jobs_per_gpu"]
    processes = jobs["processes"]["k"]
    assert set(processes) == {"1", "2"}
    assert processes["1"]["speedup_vs_one"] == 1.0
    assert len(processes["2"]["per_job_img_per_s"]) == 2 and processes["2"]["img_per_s"] > 0
    assert jobs["mps"]["status"] == "skipped"  # no MPS daemon on a CPU machine
    assert set(jobs["streams"]["k"]) == {"1", "2"}
    assert jobs["best"]["mechanism"] in ("processes", "streams")
    cache = Path(jobs["cache"]["path"])
    assert cache == root / "work" / "cache" / "jobs_per_gpu.json"  # never the real machine's cache
    assert jobs["cache"]["auto_resolves_to"]["processes"]["jobs_per_gpu"] in (1, 2)


def test_the_markdown_says_what_ran(short_run):
    root, summary, _ = short_run
    text = (root / "out" / "summary.md").read_text()
    assert text.startswith("# cnnbench GPU check (DRY RUN")
    for name in ["install", *SHORT_STEPS]:
        assert f"| {name} | ok |" in text
    for name in set(STEPS) - {"install", *SHORT_STEPS}:
        assert f"| {name} | skipped | 0.0 | 0 | not selected (--steps) |" in text
    for target in summary["targets"]:
        assert target["what"] in text
    assert "| processes | 2 |" in text and "| streams | 2 |" in text


# ----- every step (slow: a minute or two on a CPU) ------------------------------------------------------
@pytest.mark.slow
def test_every_step_runs_and_succeeds(dry_run):
    root, summary, log = dry_run
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == STEPS
    failed = {name: s["reason"] for name, s in steps.items() if s["status"] != "ok"}
    assert not failed, f"{failed}\n{log[-6000:]}"
    for name in STEPS[1:]:
        assert steps[name]["seconds"] > 0 and steps[name]["budget_s"] >= steps[name]["seconds"]
    text = (root / "out" / "summary.md").read_text()
    for name in STEPS:
        assert f"| {name} | ok |" in text


@pytest.mark.slow
def test_every_target_gets_its_figure_and_every_file_is_written(dry_run):
    root, summary, _ = dry_run
    assert [t["key"] for t in summary["targets"]] == list(part("profiles").TARGETS)
    for target in summary["targets"]:
        assert target["measured"] is not None, target  # every target got its figure, even on the CPU
        assert target["pass"] is None and "dry run" in target["note"]  # ... but no verdict
    assert set(summary["sweep_estimate"]["step_ms_by_depth"]) == {"20", "32", "44", "56"}
    assert {p.name for p in (root / "out").iterdir()} == OUT_FILES


@pytest.mark.slow
def test_the_cuda_tests_are_collected_with_the_cuda_marker(dry_run):
    _, summary, log = dry_run
    tests = summary["results"]["cuda_tests"]
    assert "tests/test_cuda.py" in tests["files"]
    ids = [t["id"] for t in tests["tests"]]
    assert "tests/test_cuda.py::test_ctrl_c_then_resume_on_cuda_is_exact" in ids
    assert "tests/test_cuda.py::test_one_process_nccl_ddp_trains_exactly_as_a_single_process" in ids
    assert not any("test_gpus.py" in i or "test_gpu_check.py" in i for i in ids)
    assert "-m pytest -m cuda" in log and "--collect-only" in log


@pytest.mark.slow
def test_each_candidate_and_variant_is_measured_and_extrapolated(dry_run):
    import torch

    from cnnbench.fastpath.probe import candidates

    _, summary, _ = dry_run
    results = summary["results"]
    for depth in (20, 56):
        measured = results[f"candidates_resnet{depth}"]["variants"]
        assert sorted(measured) == sorted(candidates(torch.device("cpu")))
        fastest = results[f"candidates_resnet{depth}"]["fastest"]
        for step in (f"variants_resnet{depth}", f"compiled_resnet{depth}"):
            variants = results[step]["variants"]
            assert variants and all(name.startswith(fastest + "+") for name in variants)
        for v in [*measured.values(), *results[f"variants_resnet{depth}"]["variants"].values()]:
            assert v["step_ms"] > 0 and v["est_64k_s"] == pytest.approx(64 * v["step_ms"])
            assert v["timed_steps"] == 2
        auto = results[f"auto_resnet{depth}"]
        assert auto["depth"] == depth and auto["device"] == "cpu" and auto["timed_steps"] == 2
        assert auto["est_64k_s"] == pytest.approx(64 * auto["train_step_ms"])
        assert auto["est_64k_with_eval_s"] > auto["est_64k_s"]


@pytest.mark.slow
def test_the_quick_sweep_runs_end_to_end_with_jobs_sharing(dry_run):
    root, summary, _ = dry_run
    sweep = summary["results"]["sweep_quick"]
    assert sweep["launcher_n_jobs"] == 2  # hydra/launcher=gpus: k=2 jobs at once (no GPU: k in all)
    assert sorted(j["job"] for j in sweep["jobs"]) == [
        "depth=20,model=plain",
        "depth=20,model=resnet",
        "depth=56,model=plain",
        "depth=56,model=resnet",
    ]
    assert all(j["status"] == "completed" and j["iteration"] == 6 for j in sweep["jobs"])
    assert "| plain" in (root / "out" / "report.md").read_text() or summary["results"]["report"]["table"]


# ----- the verdicts of a GPU run, on made-up measurements -------------------------------------------------
def fake_results(step20_ms: float, step56_ms: float, overhead: float, speedup: float) -> dict:
    auto = {
        "train_step_ms": step20_ms,
        "pure_step_ms": step20_ms / (1 + overhead / 100),
        "loop_overhead_pct": overhead,
    }
    return {
        "auto_resnet20": auto,
        "auto_resnet56": {**auto, "train_step_ms": step56_ms},
        "jobs_per_gpu": {"best": {"mechanism": "processes", "jobs_per_gpu": 4, "speedup_vs_one": speedup}},
    }


def verdicts(results: dict, total_s: float = 400.0) -> dict:
    targets = part("summary").evaluate_targets(part("profiles").GPU, results, total_s)
    return {t["key"]: t["pass"] for t in targets}


def test_targets_pass_and_fail_on_the_measured_figures():
    fast = verdicts(fake_results(1.2, 3.0, 3.0, 2.5))
    assert all(fast.values()), fast
    # 1.5 ms x 64k = 96 s > 90 s; the sweep: 2 x 64k x (1.5 + 2.5 + 3.5 + 4.5) ms = 1536 s one at a
    # time, 1536 / 2 = 768 s shared: both over their limits.
    slow = verdicts(fake_results(1.5, 4.5, 6.0, 2.0), total_s=500.0)
    assert slow == {
        "resnet20_64k_s": False,
        "resnet56_64k_s": False,
        "sweep_shared_s": False,
        "sweep_one_at_a_time_s": False,
        "loop_overhead_resnet20_pct": False,
        "loop_overhead_resnet56_pct": False,
        "check_total_s": False,
    }
    estimate = part("summary").sweep_estimates(fake_results(1.5, 4.5, 6.0, 2.0))
    assert estimate["step_ms_by_depth"] == pytest.approx({20: 1.5, 32: 2.5, 44: 3.5, 56: 4.5})
    assert estimate["one_at_a_time_s"] == pytest.approx(1536.0)
    assert estimate["shared_s"] == pytest.approx(768.0)
    missing = verdicts({})
    assert missing["resnet20_64k_s"] is None and missing["check_total_s"] is True


def test_the_fewest_jobs_within_noise_of_the_best_win():
    best_k = part("outputs").best_k
    measured = {"k": {"1": {"img_per_s": 100.0}, "2": {"img_per_s": 180.0}, "4": {"img_per_s": 250.0},
                      "8": {"img_per_s": 255.0}}}  # fmt: skip
    assert best_k(measured)["jobs_per_gpu"] == 4  # 8 is within 3%: not worth twice the jobs
    assert best_k({"k": {"1": {"status": "skipped"}}}) is None


def test_a_gpu_runs_markdown_shows_the_verdicts_and_the_machine():
    summarize = part("summary")
    results = fake_results(1.2, 5.0, 3.0, 2.5)
    results["environment"] = {
        "gpu": "NVIDIA H200",
        "gpu_count": 1,
        "torch": "2.11.0+cu130",
        "cuda": "13.0",
        "nvidia_smi": {"gpus": [{"name": "NVIDIA H200", "driver_version": "580.159.03"}]},
    }
    steps = [part("runner").StepResult("environment", "ok", 3.0, 40.0)]
    install = {"status": "ok", "seconds": 9.0}
    summary = summarize.build_summary(part("profiles").GPU, steps, results, install, 300.0)
    text = summarize.summary_markdown(summary)
    assert "NVIDIA H200" in text and "driver 580.159.03" in text and "torch 2.11.0+cu130" in text
    assert "DRY RUN" not in text
    assert "| ResNet-20, 64k iterations of batch 128: training time | 90 s | 76.8 s | **pass** |" in text
    assert "| ResNet-56, 64k iterations of batch 128: training time | 240 s | 320.0 s | **FAIL** |" in text


def test_the_script_refuses_unknown_arguments(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2 and "unknown argument --frobnicate" in result.stderr


def test_the_script_refuses_a_step_it_does_not_have(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(tmp_path / "out")]
        + ["--work", str(tmp_path / "work"), "--steps", "environment,frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "CNNBENCH_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 1 and "no step frobnicate; the steps: environment cuda_tests" in result.stderr


def test_the_command_line_is_the_one_gpu_check_sh_passes():
    args = part().parse(["--out", "o", "--work", "w", "--python", "py", "--install", "{}", "--dry-run"])
    assert (args.mode, args.out, args.work, args.python, args.dry_run) == (
        "check",
        Path("o"),
        Path("w"),
        "py",
        True,
    )
    assert (
        args.steps is None and part().parse(["--steps", "environment,report"]).steps == "environment,report"
    )
    worker = part().parse(["worker", "--index", "1", "--phases", "1,2", "--", "depth=20"])
    assert (worker.mode, worker.index, worker.phases, worker.overrides) == ("worker", 1, "1,2", ["depth=20"])


def test_update_variants_follow_the_trees_knobs_and_the_device():
    update_variants = part("steps").update_variants
    keys = ["compile", "cuda_graphs", "fused_optimizer"]
    names = lambda *args: [name for name, _ in update_variants(*args)]  # noqa: E731
    assert names(keys, "cuda", False, "bf16") == ["eager/foreach", "eager/fused", "eager/fused+graphs"]
    assert names(keys, "cuda", True, "fp16") == ["compiled/foreach", "compiled/fused"]  # fp16: no graph
    assert names(keys, "cpu", False, "fp32") == ["eager/foreach", "eager/fused"]  # graphs: CUDA only
    assert update_variants(["compile"], "cuda", True, "bf16") == [
        ("compiled/foreach", ["trainer.compile=true"])
    ]


def test_compare_runs_compare_py_and_extrapolates_to_64k_iterations(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    check = part("steps").GpuCheck(part("profiles").DRY_RUN, tmp_path / "out", tmp_path / "work", "py", {})
    seen = []

    def fake_python_command(args, **kwargs):
        seen.append([str(a) for a in args])
        printed = 'a log line\n{"variants": {"fp32/nchw": {"step_ms": 3.0}}}\n'
        return part("runner").Finished(list(args), 0, 1.0, printed, "")

    monkeypatch.setattr(check, "python_command", fake_python_command)
    measured = check.compare(20, [("fp32/nchw", ["trainer.precision=fp32", "trainer.channels_last=false"])])
    assert measured == {"fp32/nchw": {"step_ms": 3.0, "timed_steps": 2, "est_64k_s": pytest.approx(192.0)}}
    [args] = seen
    assert args[:3] == ["benchmarks/compare.py", "--json", "--common"]
    common = args[3].split()
    assert {"model=resnet", "depth=20", "trainer.device=cpu", "trainer.max_iters=64000"} <= set(common)
    assert args[4:] == ["--variant", "fp32/nchw", "trainer.precision=fp32 trainer.channels_last=false"] + [
        "--iters", "2", "--repeats", "1", "--warmup", "1"
    ]  # fmt: skip
    check.log.close()


def test_a_variant_that_fails_is_recorded_and_the_others_still_measured(tmp_path, monkeypatch):
    steps, failed = part("steps"), part("runner").StepFailed
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    check = steps.GpuCheck(part("profiles").DRY_RUN, tmp_path / "out", tmp_path / "work", sys.executable, {})
    calls = []

    def fake_compare(depth, variants):
        calls.append([name for name, _ in variants])
        if any(name.endswith("graphs") for name, _ in variants):
            raise failed("compare.py exit code 1: cannot capture")
        return {name: {"step_ms": 2.0} for name, _ in variants}

    monkeypatch.setattr(check, "_compare", fake_compare)
    variants = [("a/foreach", []), ("a/fused", []), ("a/fused+graphs", [])]
    measured = check.compare(20, variants)
    assert calls == [
        ["a/foreach", "a/fused", "a/fused+graphs"],
        ["a/foreach"],
        ["a/fused"],
        ["a/fused+graphs"],
    ]
    assert measured["a/fused"] == {"step_ms": 2.0} and "cannot capture" in measured["a/fused+graphs"]["error"]
    check.log.close()
