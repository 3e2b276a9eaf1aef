"""One process per run folder (cnnbench.rundir.lock): run.lock, held while training (and eval, export) write.

A second process that holds a folder is a real child process: it takes the lock, says so on its stdout and
then waits on its stdin, so the tests know it holds the lock without sleeping; SIGKILL ends it the hard
way, and waiting for it guarantees the kernel has released its lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import TINY
from test_resume import ENV, TIMEOUT
from test_resume import cnnbench as cnnbench_cli  # the CLI in a process of its own

import cnnbench
from cnnbench.errors import CnnbenchError
from cnnbench.rundir import lock
from cnnbench.rundir.files import LOCK_NAME

FAST = ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"]
RUN = [*TINY, *FAST]  # 20 iterations, a checkpoint every 10

HOLDER = """
import sys
from cnnbench.rundir.lock import acquire
held = acquire(sys.argv[1], sys.argv[2], sys.argv[3] or None)
print("locked", flush=True)
sys.stdin.read()  # holds the folder until the test kills this process
"""
PROBE = """
import json, sys
from cnnbench.rundir.lock import probe
found = probe(sys.argv[1])
print(json.dumps({"state": found.state, "holder": found.holder and found.holder.record()}))
"""


@pytest.fixture
def holder() -> Iterator[Callable[..., subprocess.Popen]]:
    """``hold(folder, command="train", job="")``: a child process that holds ``folder`` until killed."""
    started: list[subprocess.Popen] = []

    def hold(folder: Path, command: str = "train", job: str = "") -> subprocess.Popen:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder), command, job],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        started.append(child)
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        return child

    yield hold
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(TIMEOUT)


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(TIMEOUT) == -signal.SIGKILL  # exited: the kernel has dropped its locks


def probe_elsewhere(folder: Path) -> dict:
    """What another process sees (a probe in this process answers from its own registry)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, env=ENV, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def files_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----- the lock itself ----------------------------------------------------------------------------------
def test_a_held_folder_names_its_holder_and_a_dead_holder_frees_it(tmp_path: Path, holder) -> None:
    run = tmp_path / "run"
    assert lock.probe(run).state == lock.UNKNOWN  # no run.lock: a run of an older version
    child = holder(run, "train", "4242_7")
    found = lock.probe(run)
    assert found.state == lock.HELD and not found.mine
    assert (found.holder.pid, found.holder.host) == (child.pid, socket.gethostname())
    assert (found.holder.command, found.holder.job_id) == ("train", "4242_7")
    since = datetime.fromisoformat(found.holder.since)
    assert since.utcoffset().total_seconds() == 0 and abs(datetime.now(timezone.utc) - since).seconds < 600
    with pytest.raises(lock.FolderBusy) as refused:
        lock.acquire(run, "eval")
    message = str(refused.value)
    assert f"{run} is being trained by pid {child.pid} on host {socket.gethostname()} since" in message
    assert f"`kill {child.pid}`" in message and "`scancel 4242_7`" in message and "\n" not in message

    kill(child)
    assert lock.probe(run).state == lock.FREE
    with lock.acquire(run, "export") as held:
        assert held.locked  # (reading run.lock here would drop the lock: see the next test)
        assert probe_elsewhere(run)["holder"] == {
            **held.holder.record(),
            "pid": os.getpid(),
            "command": "export",
        }
    assert (run / LOCK_NAME).read_text() == ""  # a clean release names nobody
    assert probe_elsewhere(run)["state"] == lock.FREE
    os.utime(run / LOCK_NAME, (1_000_000, 1_000_000))  # long ago: any write would show
    before = (run / LOCK_NAME).stat()
    with lock.acquire(run, "eval"):
        assert probe_elsewhere(run)["holder"]["command"] == "eval"
    after = (run / LOCK_NAME).stat()  # eval and export leave the folder's other files as they were
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_this_process_never_drops_its_own_lock_by_looking_at_it(tmp_path: Path) -> None:
    """POSIX record locks belong to the process, and closing any descriptor of the file drops them all: a
    probe or a second acquisition in the holding process must not open the file."""
    run = tmp_path / "run"
    with lock.acquire(run, "train"):
        assert lock.probe(run).mine
        lock.refuse_if_held(run)  # the holder itself may go on (decide() runs inside the trainer)
        with pytest.raises(lock.FolderBusy, match="by this same process"):
            lock.acquire(run, "eval")
        assert probe_elsewhere(run)["holder"]["pid"] == os.getpid()  # still held
    assert probe_elsewhere(run)["state"] == lock.FREE


def test_without_record_locks_it_warns_once_and_goes_on(tmp_path: Path, monkeypatch, caplog) -> None:
    import errno

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "lockf", no_locks)
    with caplog.at_level("WARNING", logger="cnnbench"):
        held = lock.acquire(tmp_path / "run", "train")
    assert not held.locked and lock.probe(tmp_path / "run").state == lock.UNKNOWN
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no POSIX record locks" in warnings[0].getMessage()
    assert "Lustre needs the flock mount option" in warnings[0].getMessage()
    held.release()


# ----- the trainer holds it for the whole run -------------------------------------------------------------
def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *FAST, *overrides])


def test_training_holds_the_folder_until_it_ends_however_it_ends(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    folder = tmp_path / "run"
    cfg = _compose("trainer.max_iters=10", "trainer.eval_every=5", "trainer.ckpt_every=5")
    step, seen, failed = TrainStep.__call__, [], []

    def watched_step(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if len(seen) == len(failed):  # the first step of each call: the folder is already written to
            seen.append(probe_elsewhere(folder))
        if iteration == 6 and not failed:
            failed.append(iteration)
            raise RuntimeError("simulated failure")

    monkeypatch.setattr(TrainStep, "__call__", watched_step)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(cfg, folder)
    assert seen[0]["state"] == lock.HELD
    assert (seen[0]["holder"]["pid"], seen[0]["holder"]["command"]) == (os.getpid(), "train")
    assert probe_elsewhere(folder)["state"] == lock.FREE  # a failed run lets go
    assert json.loads((folder / "metrics.json").read_text())["status"] == "failed"

    run(cfg, folder, resume=True)  # continues from iteration 5, and lets go at the end
    assert seen[1]["state"] == lock.HELD and probe_elsewhere(folder)["state"] == lock.FREE


def test_under_torchrun_only_rank_0_holds_the_folder(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.core.distributed import DistContext
    from cnnbench.engine import trainer

    seen = []
    monkeypatch.setattr(trainer, "_run", lambda cfg, run_dir, *args: seen.append(lock.probe(run_dir)))
    for rank in (1, 0):
        monkeypatch.setattr(trainer, "context", lambda rank=rank: DistContext(rank, 2, rank))
        trainer.run(_compose(), tmp_path / "run", resume=True)
    assert [s.state for s in seen] == [lock.UNKNOWN, lock.HELD]  # rank 1 made no run.lock at all


# ----- through the real command line ------------------------------------------------------------------


def test_a_second_train_is_refused_before_anything_is_written_and_runs_once_the_holder_is_gone(
    tmp_path: Path, holder, monkeypatch, cli
) -> None:
    from cnnbench.engine.step import TrainStep

    run = tmp_path / "run"
    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 15:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    assert cnnbench.train(*RUN, run_dir=run).status == "interrupted"  # checkpoint at 15 of 20
    monkeypatch.setattr(TrainStep, "__call__", step)

    child = holder(run)
    before = files_of(run)
    assert ".hydra/config.yaml" in before and "checkpoint.pt" in before
    refused = cnnbench_cli("train", *RUN, f"hydra.run.dir={run}", cwd=tmp_path)
    output = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 2, output
    assert "Traceback" not in output and output.count("error:") == 1
    assert f"is being trained by pid {child.pid} on host {socket.gethostname()} since" in output
    assert f"`kill {child.pid}`" in output
    assert files_of(run) == before  # .hydra/ included: refused before Hydra wrote anything
    resume = cli("resume", str(run))  # `cnnbench resume` is refused the same way
    assert resume.exit_code == 2 and f"pid {child.pid}" in resume.output
    assert files_of(run) == before

    shown = cli("status", "--json", str(run))
    assert shown.exit_code == 0, shown.output
    (job,) = json.loads(shown.stdout)[0]["jobs"]
    assert job["state"] == "running" and job["holder"]["pid"] == child.pid
    assert job["holder"]["host"] == socket.gethostname() and f"pid {child.pid}" in job["message"]

    kill(child)
    shown = json.loads(cli("status", "--json", str(run)).stdout)[0]["jobs"][0]
    assert shown["state"] == "interrupted" and shown["holder"] is None
    resumed = cnnbench_cli("train", *RUN, f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming {run} at iteration 15/20" in (run / "train.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert probe_elsewhere(run)["state"] == lock.FREE


def test_the_python_api_is_refused_too(tmp_path: Path, holder) -> None:
    """A folder another process has just locked (its trainer still loading, say): nothing is written."""
    fresh = tmp_path / "fresh"
    child = holder(fresh)
    with pytest.raises(CnnbenchError, match=f"is being trained by pid {child.pid} on host"):
        cnnbench.train(*RUN, run_dir=fresh)
    assert sorted(files_of(fresh)) == [LOCK_NAME]  # no .hydra/, no train.log
