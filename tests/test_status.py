"""`cnnbench status`: every job of run and sweep folders, read from the small files, changing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from cnnbench.commands.status import folder_status, format_duration
from cnnbench.commands.status_jobs import STALE_FLOOR_S


@pytest.fixture
def now() -> float:
    """The clock when the test starts: file ages are set from it and the states read at it, so the ages
    are what the test says however long after the module's import (or another test) it runs."""
    return time.time()


def write_multirun(sweep: Path, params: dict, task: list[str], sweeper: str | None = None) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    record = {
        "hydra": {
            "sweep": {"dir": str(sweep), "subdir": "${hydra.job.override_dirname}"},
            "sweeper": {
                "_target_": sweeper or "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "max_batch_size": None,
                "params": params,
            },
            "overrides": {"hydra": [f"hydra.sweep.dir={sweep}"], "task": task},
            "job": {
                "config": {
                    "override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": ["experiment"]}
                }
            },
        },
        "trainer": {"max_iters": 1000, "eval_every": 100},
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def write_job(
    folder: Path,
    overrides: list[str] | None = None,
    metrics: dict | str | None = None,
    age: float = 0.0,
    checkpoint: bool = False,
    max_iters: int = 1000,
    eval_every: int = 100,
    now: float | None = None,
) -> Path:
    """A job folder as training leaves it: .hydra/ and, once begun, metrics.json written ``age`` s before
    ``now`` (default: the clock now)."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text(
        yaml.safe_dump({"depth": 20, "trainer": {"max_iters": max_iters, "eval_every": eval_every}})
    )
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"not a real checkpoint: status must never load it")
    if metrics is not None:
        path = folder / "metrics.json"
        path.write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
        written = (time.time() if now is None else now) - age
        os.utime(path, (written, written))
    return folder


def metrics(status: str, iteration: int, elapsed: float, message: str | None = None, **extra) -> dict:
    return {
        "status": status,
        "model": "plain",
        "depth": 20,
        "seed": 0,
        "iteration": iteration,
        "max_iters": 1000,
        "elapsed_seconds": elapsed,
        "message": message,
        "train_error": 0.1,
        "test_error": 0.2,
        **extra,
    }


def attempt(n: int, reason: str | None, start: int, end: int | None) -> dict:
    return {
        "attempt": n,
        "job_id": f"1234_{n}",
        "host": "node1",
        "started": "2026-11-23T14:12:03+00:00",
        "stopped": None if end is None else "2026-11-23T15:12:03+00:00",
        "reason": reason,
        "start_iteration": start,
        "end_iteration": end,
    }


def snapshot(folder: Path) -> dict[str, tuple[bool, int, int]]:
    """Every file and folder under ``folder`` with its size and mtime: status must change none."""
    entries = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.stat()
            entries[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return entries


@pytest.fixture
def sweep(tmp_path, now) -> Path:
    """A 2x5 sweep (model x depth, experiment excluded from folder names) in every state a job can be in."""
    sweep = tmp_path / "sweep"
    write_multirun(sweep, {"model": "plain,resnet", "depth": "20,32,44,56,110"}, ["experiment=quick"])

    def job(model: str, depth: int, **kwargs) -> Path:
        name = f"depth={depth},model={model}"
        overrides = [f"model={model}", f"depth={depth}", "experiment=quick"]
        return write_job(sweep / name, overrides, now=now, **kwargs)

    job("plain", 20, metrics=metrics("completed", 1000, 500.0, attempts=[attempt(1, "completed", 0, 1000)]))
    job(
        "plain",
        32,
        checkpoint=True,
        metrics=metrics(
            "interrupted",
            400,
            200.0,
            "stopped by SIGTERM",
            attempts=[
                attempt(1, "interrupted (SIGTERM)", 0, 200),
                attempt(2, "interrupted (SIGTERM)", 200, 400),
            ],
        ),
    )
    job(
        "plain",
        44,
        checkpoint=True,
        metrics=metrics("diverged", 300, 90.0, "non-finite loss\nat step 301", diverged_at=301),
    )
    job("plain", 56, metrics=metrics("failed", 100, 60.0, "RuntimeError: CUDA out of memory. " + "x" * 200))
    # running, last written an hour ago; 1 s/iteration, eval_every=100: 3 intervals = 300 s < the 600 s floor
    job("plain", 110, checkpoint=True, metrics=metrics("running", 500, 500.0), age=3600)
    job("resnet", 20, metrics=metrics("running", 250, 100.0), age=30)
    job("resnet", 32, metrics='{"status": "running", "iteration": 1')  # cut short
    job("resnet", 44)  # launched, no metrics yet
    # depth=56,model=resnet and depth=110,model=resnet: never launched
    (sweep / "report").mkdir()  # not a job: ignored
    return sweep


def rows(result) -> dict[str, object]:
    return {j.job: j for j in result.jobs}


def test_sweep_states_progress_attempts_and_eta(sweep, now):
    result = folder_status(sweep, now=now)
    assert result.kind == "sweep" and result.expected_jobs == 10
    jobs = rows(result)
    # Hydra's BasicSweeper order: model varies slowest (first in the params), then depth.
    plain = [f"depth={d},model=plain" for d in (20, 32, 44, 56, 110)]
    assert [j.job for j in result.jobs][:6] == [*plain, "depth=20,model=resnet"]
    state = {name: j.state for name, j in jobs.items()}
    assert state == {
        "depth=20,model=plain": "completed",
        "depth=32,model=plain": "interrupted",
        "depth=44,model=plain": "diverged",
        "depth=56,model=plain": "failed",
        "depth=110,model=plain": "stale",
        "depth=20,model=resnet": "running",
        "depth=32,model=resnet": "unreadable",
        "depth=44,model=resnet": "not started",
        "depth=56,model=resnet": "not started",
        "depth=110,model=resnet": "not started",
    }
    done = jobs["depth=20,model=plain"]
    assert (done.iteration, done.max_iters, done.percent, done.attempts, done.eta_seconds) == (
        1000,
        1000,
        100.0,
        1,
        None,
    )
    interrupted = jobs["depth=32,model=plain"]
    assert interrupted.attempts == 2 and interrupted.checkpoint
    assert interrupted.message == "stopped by SIGTERM"
    assert interrupted.eta_seconds == pytest.approx(200.0 / 400 * 600)  # elapsed / done x left
    diverged = jobs["depth=44,model=plain"]
    assert diverged.message.startswith("at iteration 301: non-finite loss")
    assert diverged.eta_seconds is None and diverged.attempts == 1  # no attempts list: one
    failed = jobs["depth=56,model=plain"]
    assert failed.eta_seconds == pytest.approx(60.0 / 100 * 900)
    stale = jobs["depth=110,model=plain"]
    assert "1h 00m" in stale.message and stale.metrics_age_seconds == pytest.approx(3600, abs=5)
    assert stale.eta_seconds == pytest.approx(500.0)
    running = jobs["depth=20,model=resnet"]
    assert running.eta_seconds == pytest.approx(100.0 / 250 * 750) and running.message is None
    assert "not valid JSON" in jobs["depth=32,model=resnet"].message
    assert jobs["depth=44,model=resnet"].message == "no metrics yet"
    missing = jobs["depth=56,model=resnet"]
    assert missing.path is None and missing.overrides == ["model=resnet", "depth=56", "experiment=quick"]
    assert missing.max_iters == 1000  # the total the other jobs share

    summary = result.summary()
    assert summary["counts"] == {
        "completed": 1,
        "running": 1,
        "stale": 1,
        "interrupted": 1,
        "diverged": 1,
        "failed": 1,
        "not started": 3,
        "unreadable": 1,
    }
    assert summary["iterations_done"] == 1000 + 400 + 300 + 100 + 500 + 250
    assert summary["iterations_total"] == 10_000
    assert any(f"cnnbench resume {sweep}" in step for step in summary["next"])
    assert any("Diverged" in step for step in summary["next"])


def test_stale_threshold_follows_the_write_interval(tmp_path, now):
    # 10 s per iteration, eval_every=100: metrics.json is rewritten every ~1000 s; stale after 3000 s.
    slow = metrics("running", 10, 100.0)
    for name, age, state in (("a", 2000, "running"), ("b", 3100, "stale")):
        job = write_job(tmp_path / name, metrics=slow, age=age, now=now)
        assert folder_status(job, now=now).jobs[0].state == state
    # No pace measured yet (iteration 0): the 10-minute floor.
    fresh = metrics("running", 0, 0.0)
    young = write_job(tmp_path / "c", metrics=fresh, age=STALE_FLOOR_S - 60, now=now)
    assert folder_status(young, now=now).jobs[0].state == "running"
    old = write_job(tmp_path / "d", metrics=fresh, age=STALE_FLOOR_S + 60, now=now)
    assert folder_status(old, now=now).jobs[0].state == "stale"


def test_cli_table_json_and_writes_nothing(cli, sweep):
    before = snapshot(sweep)
    result = cli("status", str(sweep))
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "depth=110,model=resnet",
        "running?",
        "400 / 1,000 (40%)",
        "never launched",
        "no metrics yet",
        "not valid JSON",
        "10 job(s): 1 completed, 1 running, 1 running?, 1 interrupted, 1 diverged, 1 failed, 3 not "
        "started, 1 unreadable; 2,550 / 10,000 iterations (26%).",
        f"cnnbench resume {sweep}",
    ):
        assert text in out, (text, out)
    assert "x" * 100 not in out  # the long error is cut to one line in the table
    assert "Traceback" not in out

    result = cli("status", str(sweep), "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["kind"] == "sweep" and record["summary"]["expected_jobs"] == 10
    by_name = {j["job"]: j for j in record["jobs"]}
    job = by_name["depth=32,model=plain"]
    assert (job["state"], job["iteration"], job["max_iters"], job["percent"], job["attempts"]) == (
        "interrupted",
        400,
        1000,
        40.0,
        2,
    )
    assert job["eta_seconds"] == pytest.approx(300.0) and len(job["attempt_log"]) == 2
    assert by_name["depth=56,model=plain"]["message"].endswith("x" * 200)  # whole message in JSON
    assert snapshot(sweep) == before


def test_completed_sweep_has_no_next_step(cli, tmp_path):
    sweep = tmp_path / "done"
    write_multirun(sweep, {"depth": "range(20,57,12)"}, ["model=plain"])
    for depth in (20, 32, 44, 56):
        write_job(
            sweep / f"depth={depth},model=plain",
            [f"depth={depth}", "model=plain"],
            metrics=metrics("completed", 1000, 100.0),
        )
    result = folder_status(sweep)
    assert result.expected_jobs == 4 and result.summary()["next"] == []
    out = cli("status", str(sweep)).output
    assert "All completed." in out and "cnnbench resume" not in out


def test_sweep_of_unknown_size(tmp_path):
    sweep = tmp_path / "optuna"
    write_multirun(sweep, {"optimizer.lr": "interval(0.01,0.1)"}, [], sweeper="hydra_plugins.OptunaSweeper")
    write_job(sweep / "0", ["optimizer.lr=0.05"], metrics=metrics("completed", 1000, 10.0))
    result = folder_status(sweep)
    assert result.expected_jobs is None and len(result.jobs) == 1
    assert "unknown" in result.notes[0]


def test_bad_paths_exit_2_and_the_others_still_show(cli, tmp_path, sweep):
    (tmp_path / "empty").mkdir()
    result = cli("status", str(tmp_path / "missing"), str(sweep), str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "holds neither a run nor a sweep" in result.output and "multirun.yaml" in result.output
    assert "depth=20,model=plain" in result.output  # the good folder is still shown
    assert "Traceback" not in result.output
    # The parent of sweep folders: say where the runs are.
    result = cli("status", str(tmp_path))
    assert result.exit_code == 2 and str(sweep) in result.output


def test_a_real_run(cli, tmp_path):
    # fp32 NCHW: no fast-path probe (minutes on a shared CPU); status reads the same files either way.
    fixed = ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"]
    assert cli("train", *TINY, *fixed, "hydra.run.dir=run").exit_code == 0
    run = tmp_path / "run"
    before = snapshot(run)
    result = cli("status", "run", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    (job,) = record["jobs"]
    assert record["kind"] == "run"
    assert (job["state"], job["iteration"], job["max_iters"], job["attempts"], job["checkpoint"]) == (
        "completed",
        20,
        20,
        1,
        True,
    )
    assert job["eta_seconds"] is None and record["summary"]["next"] == []
    result = cli("status", "run/metrics.json")  # the file names its folder
    assert result.exit_code == 0 and "20 / 20 (100%)" in result.output
    assert snapshot(run) == before


def test_interrupted_run_hint(tmp_path):
    run = write_job(tmp_path / "r", metrics=metrics("interrupted", 10, 5.0), checkpoint=True)
    assert folder_status(run).next_steps()[0] == f"Continue it: cnnbench resume {run}"
    bare = write_job(tmp_path / "s", metrics=metrics("failed", 5, 5.0))
    assert "no checkpoint yet" in folder_status(bare).next_steps()[0]


def test_sixteen_jobs_fast(tmp_path):
    sweep = tmp_path / "big"
    write_multirun(sweep, {"model": "plain,resnet", "depth": "20,32,44,56", "seed": "0,1"}, [])
    for model in ("plain", "resnet"):
        for depth in (20, 32, 44, 56):
            for seed in (0, 1):
                write_job(
                    sweep / f"depth={depth},model={model},seed={seed}",
                    [f"model={model}", f"depth={depth}", f"seed={seed}"],
                    metrics=metrics("running", 100, 10.0),
                )
    start = time.perf_counter()
    result = folder_status(sweep)
    seconds = time.perf_counter() - start
    assert result.expected_jobs == 16 and result.counts() == {"running": 16}
    assert seconds < 2.0  # typically ~0.2 s (the override parser's import); generous on a shared CPU


def test_status_does_not_import_torch():
    code = "import sys, cnnbench.commands.status, cnnbench.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_format_duration():
    durations = [format_duration(s) for s in (None, 5, 65, 3725, 90000)]
    assert durations == ["", "5s", "1m 05s", "1h 02m", "1d 01h"]


def test_run_lock_tells_running_from_killed_before_file_times_do(tmp_path, now):
    """A free run.lock under a fresh 'running' metrics.json: the trainer died (no waiting for staleness); a
    held one: running, by whom. Without run.lock (older runs), file times decide as before."""
    from cnnbench.rundir import lock

    run = write_job(tmp_path / "run", metrics=metrics("running", 100, 10.0), checkpoint=True, now=now)
    assert folder_status(run, now=now).jobs[0].state == "running"  # no run.lock: young, so running
    with lock.acquire(run, "train", job_id="77"):
        job = folder_status(run, now=now).jobs[0]
        assert job.state == "running" and job.holder["pid"] == os.getpid() and job.holder["job_id"] == "77"
        assert job.message.startswith(f"pid {os.getpid()} on host ")
    job = folder_status(run, now=now).jobs[0]
    assert job.state == "stale" and "no process holds run.lock" in job.message and job.holder is None
    assert "cnnbench resume" in " ".join(folder_status(run, now=now).next_steps())

    fresh = write_job(tmp_path / "fresh", now=now)  # a trainer that holds the folder, before metrics.json
    with lock.acquire(fresh, "train"):
        assert folder_status(fresh, now=now).jobs[0].state == "running"
    assert folder_status(fresh, now=now).jobs[0].state == "not started"
