"""Runs that survive: checkpoints, `cnnbench resume`, signals, divergence, failures and bad run folders.

The exactness tests stop a run and resume it, then compare metrics.json, the weights, the optimizer
state and the TensorBoard scalars bit for bit with the same run never interrupted (``reference``, a
separate `python -m cnnbench train`). Real signals go to a real `python -m cnnbench train` subprocess
(SIGTERM, SIGKILL; a double Ctrl-C in the slow suite), held at a chosen step until the signal comes, so
it lands there on any machine; in-process runs stop on chosen iterations. Every
run of a comparison uses one CPU thread: the same thread count is needed for bitwise-equal floating
point, and one thread is also the fastest on 2 shared cores.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import DictConfig
from typer.testing import CliRunner

from cnnbench.cli import app
from cnnbench.rundir.checkpoint import CHECKPOINT_NAME, load_checkpoint

ITERS = 40
TIMEOUT = 180
# depth 8 = one block per stage: a 40-iteration run takes a few seconds on one CPU thread.
TINY = ["data=digits", "model=plain", "depth=8", "trainer.batch_size=32", "trainer.log_every=5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("CNNBENCH_RESUME", None)


def tiny(run_dir: Path, *extra: str, iters: int = ITERS, ckpt_every: int = 10) -> list[str]:
    return [
        *TINY,
        "trainer.eval_every=10",
        f"trainer.max_iters={iters}",
        f"trainer.ckpt_every={ckpt_every}",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]


def cnnbench(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cnnbench", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


# `python -m cnnbench ARGS` that holds before its Nth training step (counted over the process: a sweep's
# jobs run one after another in it) until a stop is requested or it is killed. A signal sent once it
# says so finds it there however slow the machine: it cannot have finished, or gone further, meanwhile.
HOLD = """
import runpy, signal, sys, time
from cnnbench.engine.step import TrainStep

hold_at, timeout = int(sys.argv[1]), float(sys.argv[2])
sys.argv = ["cnnbench", *sys.argv[3:]]
step, calls = TrainStep.__call__, [0]

def held_step(self, iteration):
    if calls[0] == hold_at:
        print(f"held before step {hold_at}", flush=True)
        stop = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)  # the loop's GracefulStop
        deadline = time.monotonic() + timeout
        while getattr(stop, "signum", None) is None and time.monotonic() < deadline:
            time.sleep(0.01)  # a signal's handler runs as soon as it arrives, even mid-sleep
    calls[0] += 1
    step(self, iteration)

TrainStep.__call__ = held_step
runpy.run_module("cnnbench", run_name="__main__")
"""


class Running:
    """A `cnnbench` subprocess whose output (stdout and stderr) is read line by line in the background;
    with ``hold_at``, held before that training step (``HOLD``) until it is signalled."""

    def __init__(self, *args: object, cwd: Path, hold_at: int | None = None) -> None:
        held = ["-c", HOLD, str(hold_at), str(TIMEOUT)] if hold_at is not None else ["-m", "cnnbench"]
        self.proc = subprocess.Popen(
            [sys.executable, *held, *map(str, args)],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def wait_for(self, pattern: str) -> None:
        """Read until a line matches ``pattern`` (the process keeps running)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in time:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"exited before a line matching {pattern!r}:\n{self.output}")
            self.seen.append(line)
            if re.search(pattern, line):
                return

    def finish(self) -> int:
        """Wait for the exit; returns the exit code (negative: killed by that signal)."""
        code = self.proc.wait(TIMEOUT)
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return code


@pytest.fixture
def spawn() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: object, cwd: Path, hold_at: int | None = None) -> Running:
        started.append(Running(*args, cwd=cwd, hold_at=hold_at))
        return started[-1]

    yield start
    for running in started:  # a failed test must not leave a training process behind
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    """In-process `cnnbench ARGS` -> (exit code, output), for cheap checks without a start-up."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # run_hydra sets it; restored after the test
    monkeypatch.delenv("CNNBENCH_RESUME", raising=False)

    def invoke(*args: object) -> tuple[int, str]:
        # Hydra and `resume` set up logging to the runner's (then closed) streams: undo it after.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            result = CliRunner().invoke(app, [str(a) for a in args])
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        return result.exit_code, result.output

    return invoke


def compose_tiny(*overrides: str) -> DictConfig:
    """The tiny run's config, composed as `cnnbench train` would, for in-process runs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, "trainer.eval_every=10", *overrides])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process training with the subprocesses' thread count (bitwise-comparable results)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----- helpers --------------------------------------------------------------------------------------


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def final_metrics(run_dir: Path) -> dict:
    metrics = metrics_of(run_dir)
    del metrics["elapsed_seconds"]  # wall time: the one number that may differ
    del metrics["attempts"]  # the history of starts: one per attempt (checked where it matters)
    return metrics


def checkpoint_of(run_dir: Path) -> dict:
    return torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's view of the run (EventAccumulator applies purges and drops orphaned points)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw_scalar_steps(run_dir: Path, tag: str) -> list[int]:
    """Every step written for ``tag`` in every event file, purged or not."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        event.step
        for path in sorted(run_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if event.HasField("summary") and any(v.tag == tag for v in event.summary.value)
    ]


def session_starts(run_dir: Path) -> list[int]:
    """The steps of SessionLog.START events: what SummaryWriter(purge_step=N) writes (N) on a restart."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return [
        event.step
        for path in sorted(run_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if event.HasField("session_log") and event.session_log.status == SessionLog.START
    ]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its mtime and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same final metrics (every digit), weights, optimizer state and TensorBoard curves."""
    assert final_metrics(run_dir) == final_metrics(reference)
    ours, theirs = checkpoint_of(run_dir), checkpoint_of(reference)
    assert ours["iteration"] == theirs["iteration"] == ITERS
    assert ours["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for index, state in theirs["optimizer"]["state"].items():
        assert torch.equal(ours["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    curves = scalars(run_dir)
    assert curves == scalars(reference)
    for tag, points in curves.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or out-of-order steps {steps}"


def assert_clean_error(code: int, output: str, *needles: str) -> None:
    assert code != 0, output
    assert "error:" in output, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


# ----- the uninterrupted reference run --------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    result = cnnbench("train", *tiny(root / "run"), cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "run"


@pytest.fixture
def finished(reference: Path, tmp_path: Path) -> Path:
    """A copy of the completed reference run (mtimes kept), for tests that must not change it."""
    return Path(shutil.copytree(reference, tmp_path / "finished"))


def test_checkpoint_holds_the_whole_training_state(reference: Path) -> None:
    state = load_checkpoint(reference / CHECKPOINT_NAME)  # weights_only=True inside
    metrics = metrics_of(reference)
    assert metrics["status"] == "completed" and metrics["iteration"] == ITERS
    assert state["iteration"] == ITERS
    assert state["model"] and state["optimizer"]["state"]  # weights and momentum buffers
    assert {"python", "numpy", "torch"} <= state["rng"].keys()
    assert ("cuda" in state["rng"]) == torch.cuda.is_available()
    assert {"generator", "order", "position", "epoch"} <= state["sampler"].keys()
    assert isinstance(state["augment_rng"], torch.Tensor)
    assert {"loss", "errors", "iters"} <= state["window"].keys()
    assert state["best_test_error"] == metrics["best_test_error"]
    assert state["best_iteration"] == metrics["best_iteration"]
    assert state["config"]["model"]["name"] == "plain"
    assert state["config"]["trainer"]["max_iters"] == ITERS
    assert not list(reference.glob(".*.tmp")), "a temporary checkpoint file was left behind"


# ----- interrupted for real, then resumed: exactly the uninterrupted run ----------------------------


def test_sigterm_writes_a_checkpoint_and_resume_is_exact(
    reference: Path, tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    run = tmp_path / "run"
    training = spawn("train", *tiny(run), cwd=tmp_path, hold_at=15)  # past the first periodic checkpoint
    training.wait_for("held before step 15")
    training.proc.send_signal(signal.SIGTERM)  # the step it holds before is finished, then it stops
    code = training.finish()
    out = training.output

    assert code == 128 + signal.SIGTERM, out
    assert "Traceback" not in out
    assert f"cnnbench resume {run}" in out  # the exact command to continue
    metrics = metrics_of(run)
    assert metrics["status"] == "interrupted" and "SIGTERM" in metrics["message"]
    stopped_at = metrics["iteration"]
    assert stopped_at == 16  # inside a logging window (5), between checkpoints (10)
    assert checkpoint_of(run)["iteration"] == stopped_at  # written on the signal, not the periodic one
    log_before = (run / "train.log").read_text()

    resumed = cnnbench("resume", run, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert_same_run(run, reference)
    assert metrics_of(run)["status"] == "completed"
    log_after = (run / "train.log").read_text()
    assert log_after.startswith(log_before)  # train.log continues
    assert f"Resuming {run} at iteration {stopped_at}/{ITERS}" in log_after
    assert session_starts(run) == [stopped_at + 1]  # the resumed writer used purge_step


@pytest.mark.slow  # ~9 s; SIGTERM and Ctrl-C resumes stay in the default suite
def test_sigkill_resumes_from_the_last_periodic_checkpoint_and_is_exact(
    reference: Path, tmp_path: Path, spawn: Callable[..., Running], cli: Cli, one_thread: None
) -> None:
    run = tmp_path / "run"
    # Checkpoints at 20 and 40; TensorBoard is flushed at each evaluation (10, 20, 30, 40).
    training = spawn("train", *tiny(run, ckpt_every=20), cwd=tmp_path, hold_at=30)
    training.wait_for("held before step 30")  # points 25 and 30 are on disk, checkpoint 20
    training.proc.kill()
    assert training.finish() == -signal.SIGKILL

    assert metrics_of(run)["status"] == "running"  # nobody got to say otherwise
    assert checkpoint_of(run)["iteration"] == 20
    assert {25, 30} <= set(raw_scalar_steps(run, "loss/train"))  # points after the checkpoint...

    code, out = cli("resume", run)  # in-process: the same code path without another start-up
    assert code == 0, out
    assert_same_run(run, reference)  # ...are purged: each step once, with the uninterrupted values
    assert session_starts(run) == [21]
    assert raw_scalar_steps(run, "loss/train").count(25) == 2  # written twice, shown once


def test_a_killed_job_restarted_with_the_same_command_continues_exactly(
    reference: Path, tmp_path: Path, spawn: Callable[..., Running], cli: Cli, one_thread: None
) -> None:
    """What a SLURM requeue or a torchrun restart does: the same command again, in the same folder."""
    run = tmp_path / "run"
    training = spawn("train", *tiny(run, ckpt_every=20), cwd=tmp_path, hold_at=30)
    training.wait_for("held before step 30")  # after iteration 30's evaluation, checkpoint 20
    training.proc.kill()
    assert training.finish() == -signal.SIGKILL

    code, out = cli("train", *tiny(run, ckpt_every=20))  # trainer.resume=auto, the default
    assert code == 0, out
    assert f"Resuming {run} at iteration 20/{ITERS}" in (run / "train.log").read_text()
    assert_same_run(run, reference)
    first, second = metrics_of(run)["attempts"]
    assert (first["attempt"], first["start_iteration"], first["stopped"]) == (1, 0, None)
    assert "killed" in first["reason"]
    assert (second["attempt"], second["start_iteration"], second["reason"]) == (2, 20, "completed")
    assert second["end_iteration"] == ITERS


@pytest.mark.slow
def test_double_ctrl_c_aborts_without_a_half_written_checkpoint(
    reference: Path, tmp_path: Path, spawn: Callable[..., Running], cli: Cli, one_thread: None
) -> None:
    """Where the second Ctrl-C lands is up to the OS; the default suite has a deterministic version."""
    run = tmp_path / "run"
    training = spawn("train", *tiny(run), cwd=tmp_path, hold_at=15)
    training.wait_for("held before step 15")
    training.proc.send_signal(signal.SIGINT)
    training.wait_for("SIGINT received")  # the first Ctrl-C was handled: the second one aborts
    training.proc.send_signal(signal.SIGINT)
    code = training.finish()

    assert code != 0, training.output
    assert not list(run.glob(".*.tmp")), "a temporary checkpoint file was left behind"
    assert checkpoint_of(run)["iteration"] >= 10  # whichever checkpoint survived loads
    assert metrics_of(run)["status"] == "interrupted"

    code, out = cli("resume", run)
    assert code == 0, out
    assert_same_run(run, reference)


def test_a_resumed_writers_event_file_is_read_after_the_earlier_ones(tmp_path: Path) -> None:
    """TensorBoard reads a run folder's event files in name order: the second the writer started, then
    the host, the pid and a per-process counter, unpadded. A resume in the same second and process (the
    API's same call again, an in-process test) could be named ``...10`` after ``...9`` and be read
    first, its purge of the old points before them. The resumed writer's file must sort last."""
    import socket

    from cnnbench.rundir.tb import TensorBoardLog

    # What the first attempt left this very second, with a counter that sorts after any small one.
    first = (
        tmp_path / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.999999"
    )
    first.write_bytes(b"")
    resumed = TensorBoardLog(tmp_path, resume_from=10)
    try:
        assert sorted(tmp_path.glob("events.out.tfevents.*"))[-1] == resumed.path != first
    finally:
        resumed.close()


# ----- what resume and train refuse to touch --------------------------------------------------------


def test_resume_of_a_completed_run_changes_nothing(finished: Path, cli: Cli) -> None:
    before = snapshot(finished)
    code, out = cli("resume", finished)
    assert code == 0, out
    assert "already completed" in out and "nothing changed" in out
    assert snapshot(finished) == before


def test_train_into_another_runs_folder_is_refused_with_the_diff(finished: Path, cli: Cli) -> None:
    before = snapshot(finished)
    code, out = cli("train", *tiny(finished, iters=80))
    assert_clean_error(code, out, "holds another run", "trainer.max_iters: 40 -> 80")
    assert snapshot(finished) == before  # .hydra/config.yaml included


def test_train_into_a_run_folder_with_resume_never_refuses_and_points_to_resume(
    finished: Path, cli: Cli
) -> None:
    before = snapshot(finished)
    code, out = cli("train", *tiny(finished, "trainer.resume=never"))
    assert_clean_error(code, out, "already holds a run", f"cnnbench resume {finished}")
    assert snapshot(finished) == before


def test_the_same_train_command_on_a_completed_run_returns_at_once(finished: Path, cli: Cli) -> None:
    results = {name: (finished / name).read_bytes() for name in ("metrics.json", CHECKPOINT_NAME)}
    code, out = cli("train", *tiny(finished))
    assert code == 0, out
    assert "already completed" in out
    assert {name: (finished / name).read_bytes() for name in results} == results


def test_resume_must_without_a_run_is_refused_before_anything_is_written(tmp_path: Path, cli: Cli) -> None:
    run = tmp_path / "new"
    code, out = cli("train", *tiny(run, "trainer.resume=must"))
    assert_clean_error(code, out, "no run to continue", "trainer.resume=must")
    assert not run.exists()


def test_a_refused_config_leaves_no_run_folder(tmp_path: Path, cli: Cli) -> None:
    run = tmp_path / "new"
    code, out = cli("train", *tiny(run, "depth=21"))
    assert_clean_error(code, out, "depth=21")
    assert not run.exists()


def test_sweep_into_a_sweep_folder_refuses(finished: Path, tmp_path: Path, cli: Cli) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep / "seed=0")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    before = snapshot(sweep)
    code, out = cli("train", "--multirun", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert_clean_error(code, out, "already holds a sweep", f"cnnbench resume {sweep}")
    assert snapshot(sweep) == before  # multirun.yaml included


# ----- bad run folders: a clear error, nothing changed ----------------------------------------------


def _truncate(run: Path) -> None:
    data = (run / CHECKPOINT_NAME).read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])


def _garbage(run: Path) -> None:
    (run / CHECKPOINT_NAME).write_bytes(b"\x00not a checkpoint" * 100)


def _foreign(run: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, run / CHECKPOINT_NAME)


def _no_checkpoint(run: Path) -> None:
    (run / CHECKPOINT_NAME).unlink()


def _edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = run / ".hydra" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        edit(config)
        path.write_text(yaml.safe_dump(config))

    return apply


def _bad_yaml(run: Path) -> None:
    (run / ".hydra" / "config.yaml").write_text("model: [unclosed\n")


def _no_config(run: Path) -> None:
    shutil.rmtree(run / ".hydra")


BROKEN = {
    "truncated checkpoint": (_truncate, "cannot be read"),
    "garbage checkpoint": (_garbage, "cannot be read"),
    "empty checkpoint": (lambda run: (run / CHECKPOINT_NAME).write_bytes(b""), "cannot be read"),
    "foreign checkpoint": (_foreign, "not a cnnbench checkpoint"),
    "unknown model": (_edit_config(lambda c: c["model"].update(name="nosuchnet")), "Unknown model"),
    "other depth": (_edit_config(lambda c: c.update(depth=14)), "differs from the one checkpoint.pt"),
    # Same weight shapes, so only the config comparison can tell: it must not resume as another model.
    "plain edited to resnet": (
        _edit_config(lambda c: c["model"].update(name="resnet")),
        "model.name: 'plain' -> 'resnet'",
    ),
    "no batch size": (_edit_config(lambda c: c["trainer"].pop("batch_size")), "trainer.batch_size"),
    "no augment.flip": (_edit_config(lambda c: c["augment"].pop("flip")), "flip"),
    "no seed": (_edit_config(lambda c: c.pop("seed")), "seed"),
    "no trainer.device": (_edit_config(lambda c: c["trainer"].pop("device")), "device"),
    "unparsable config": (_bad_yaml, "cannot be read"),
    "no saved config": (_no_config, "no saved config"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_resume_of_a_broken_run_folder_is_a_clear_error(case: str, finished: Path, cli: Cli) -> None:
    break_it, message = BROKEN[case]
    metrics = metrics_of(finished)
    metrics.update(status="interrupted", iteration=20)  # an unfinished run, as far as resume knows
    (finished / "metrics.json").write_text(json.dumps(metrics))
    # The only checkpoint: with checkpoint.prev.pt there, a broken last one falls back to it (tested below).
    (finished / "checkpoint.prev.pt").unlink(missing_ok=True)
    break_it(finished)
    before = snapshot(finished)
    code, out = cli("resume", finished)
    assert_clean_error(code, out, message)
    assert snapshot(finished) == before


def test_resume_of_a_run_that_never_checkpointed_starts_it_again_in_place(
    reference: Path, finished: Path, cli: Cli, one_thread: None
) -> None:
    _no_checkpoint(finished)
    metrics = metrics_of(finished)
    metrics.update(status="interrupted", iteration=5)  # stopped before its first checkpoint (10)
    (finished / "metrics.json").write_text(json.dumps(metrics))
    code, out = cli("resume", finished)
    assert code == 0, out
    assert_same_run(finished, reference)


def test_resume_of_a_folder_that_is_no_run(tmp_path: Path, cli: Cli) -> None:
    code, out = cli("resume", tmp_path)
    assert_clean_error(code, out, "not a cnnbench run folder")
    assert not list(tmp_path.iterdir())
    code, out = cli("resume", tmp_path / "missing")
    assert_clean_error(code, out)
    assert not (tmp_path / "missing").exists()


# ----- divergence and failures ----------------------------------------------------------------------


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, cli: Cli, one_thread: None
) -> None:
    run = tmp_path / "run"
    # lr 0.01 for 10 iterations, then 1e6: the weights blow up within a few steps. A checkpoint
    # every iteration: the one before the NaN loss must hold finite weights.
    code, out = cli(
        "train", *tiny(run, "optimizer.lr=1e6", "schedule.warmup_iters=10", iters=25, ckpt_every=1)
    )
    assert code == 3, out
    assert_clean_error(code, out, "non-finite", "diverged")
    metrics = metrics_of(run)
    assert metrics["status"] == "diverged"
    bad = metrics["diverged_at"]
    assert 10 < bad <= 25 and f"iteration {bad}" in metrics["message"]
    state = checkpoint_of(run)
    assert 10 <= state["iteration"] < bad
    params = {k: v for k, v in state["model"].items() if k.endswith(("weight", "bias"))}
    assert params and all(bool(v.isfinite().all()) for v in params.values())

    before = snapshot(run)
    code, out = cli("resume", str(run))
    assert_clean_error(code, out, "diverged", "would diverge again")
    assert snapshot(run) == before, "a refused resume changes nothing"


def test_an_exception_is_status_failed_with_its_message_and_resume_continues(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    step = TrainStep.__call__

    def failing_step(self: TrainStep, iteration: int) -> None:
        if iteration == 13:
            raise RuntimeError("simulated disk failure")
        step(self, iteration)

    monkeypatch.setattr(TrainStep, "__call__", failing_step)
    with pytest.raises(RuntimeError, match="simulated disk failure"):
        run(cfg, tmp_path)
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "failed"
    assert metrics["message"] == "RuntimeError: simulated disk failure"
    assert metrics["iteration"] == 13
    assert checkpoint_of(tmp_path)["iteration"] == 10

    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path, resume=True)
    assert_same_run(tmp_path, reference)


@pytest.mark.parametrize("stop_at", [1, 10, 39])
def test_ctrl_c_at_any_iteration_then_resume_is_exact(
    stop_at: int,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_thread: None,
) -> None:
    """In-process, so the stop lands on a chosen iteration: the first, one that logs, evaluates and
    checkpoints (10), and the last but one. (SIGTERM above stops inside a logging window.)"""
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == stop_at:
            signal.raise_signal(signal.SIGINT)  # as if it came mid-step

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    with pytest.raises(SystemExit) as stopped:
        run(cfg, tmp_path)
    assert stopped.value.code == 128 + signal.SIGINT
    assert f"cnnbench resume {tmp_path}" in caplog.text
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "interrupted" and "SIGINT" in metrics["message"]
    assert metrics["iteration"] == checkpoint_of(tmp_path)["iteration"] == stop_at

    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path, resume=True)
    assert_same_run(tmp_path, reference)


def test_second_ctrl_c_during_the_checkpoint_write_keeps_the_previous_checkpoint(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """The worst moment for the second Ctrl-C: half-way through writing the checkpoint of the first."""
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    step, save = TrainStep.__call__, torch.save

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 13:
            signal.raise_signal(signal.SIGINT)

    def save_with_ctrl_c(obj: dict, f, *args, **kwargs) -> None:
        if obj["iteration"] != 13:
            return save(obj, f, *args, **kwargs)
        f.write(b"the first bytes of a checkpoint")
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    monkeypatch.setattr(torch, "save", save_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    assert not list(tmp_path.glob(".*.tmp")), "a temporary checkpoint file was left behind"
    assert checkpoint_of(tmp_path)["iteration"] == 10  # the periodic one, intact
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "interrupted" and "second Ctrl-C" in metrics["message"]

    monkeypatch.setattr(TrainStep, "__call__", step)
    monkeypatch.setattr(torch, "save", save)
    run(cfg, tmp_path, resume=True)
    assert_same_run(tmp_path, reference)


def test_graceful_stop_first_signal_asks_second_ctrl_c_aborts() -> None:
    from cnnbench.core.signals import GracefulStop

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)  # another SIGTERM: still a request, no abort
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ----- sweeps ---------------------------------------------------------------------------------------


def sweep_args(sweep: Path, *extra: str) -> list[str]:
    return [
        "--multirun",
        *TINY,
        "trainer.eval_every=10",
        "trainer.max_iters=20",
        "trainer.ckpt_every=10",
        "seed=0,1",
        *extra,
        f"hydra.sweep.dir={sweep}",
    ]


def job_folder(sweep: Path, seed: int) -> Path:
    (folder,) = [p for p in sweep.iterdir() if p.is_dir() and f"seed={seed}" in p.name]
    return folder


def test_resume_of_a_sweep_finishes_the_interrupted_job_only(
    tmp_path: Path, spawn: Callable[..., Running], cli: Cli
) -> None:
    sweep = tmp_path / "sweep"
    # The basic launcher runs the jobs one after the other in its process: seed=0's 20 steps, then
    # seed=1's, held before its 16th.
    sweeping = spawn("train", *sweep_args(sweep), cwd=tmp_path, hold_at=20 + 15)
    sweeping.wait_for(r"#1 : ")
    sweeping.wait_for("held before step 35")
    sweeping.proc.send_signal(signal.SIGTERM)
    assert sweeping.finish() == 128 + signal.SIGTERM, sweeping.output
    done, stopped = job_folder(sweep, 0), job_folder(sweep, 1)
    assert metrics_of(done)["status"] == "completed"
    assert metrics_of(stopped)["status"] == "interrupted" and metrics_of(stopped)["iteration"] == 16
    untouched = snapshot(done)

    code, out = cli("resume", sweep)  # in-process: Hydra's basic launcher runs the jobs here
    assert code == 0, out
    assert "Traceback" not in out
    assert f"1 finished ({done.name}: completed)" in out
    assert f"Resuming: {stopped.name}" in out
    assert f"{done.name}: already completed, skipped" in out
    assert "Launching 2 jobs locally" in out  # the sweep's own (basic) launcher
    assert snapshot(done) == untouched
    metrics = metrics_of(stopped)
    assert metrics["status"] == "completed" and metrics["iteration"] == 20
    for tag, points in scalars(stopped).items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), tag


@pytest.mark.slow
def test_resume_of_a_joblib_sweep(tmp_path: Path) -> None:
    """Through the joblib launcher: a job killed before its first checkpoint starts again, exactly."""
    sweep = tmp_path / "sweep"
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    first = cnnbench("train", *sweep_args(sweep, *joblib), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    done, lost = job_folder(sweep, 0), job_folder(sweep, 1)
    expected = final_metrics(lost)
    # What a SIGKILL before the first checkpoint leaves: the folder, no checkpoint, status running.
    (lost / CHECKPOINT_NAME).unlink()
    metrics = metrics_of(lost)
    metrics.update(status="running", iteration=5)
    (lost / "metrics.json").write_text(json.dumps(metrics))
    untouched = snapshot(done)

    result = cnnbench("resume", sweep, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"Resuming: {lost.name}" in out
    assert "Joblib.Parallel(n_jobs=2" in out  # the sweep's own launcher
    assert snapshot(done) == untouched
    assert final_metrics(lost) == expected


def test_a_requeue_signal_checkpoints_hands_over_and_the_requeued_job_continues(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """submitit's USR2: checkpoint at the step boundary, then submitit's own handler requeues and exits;
    the requeued job (the same call in the same folder) continues exactly."""
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    handed_over: list[int] = []

    def submitit_handler(signum: int, frame: object) -> None:  # requeue (scontrol), then sys.exit(-1)
        handed_over.append(checkpoint_of(tmp_path)["iteration"])
        raise SystemExit(-1)

    step = TrainStep.__call__

    def step_with_requeue_signal(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 13:
            signal.raise_signal(signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    monkeypatch.setattr(TrainStep, "__call__", step_with_requeue_signal)
    try:
        with pytest.raises(SystemExit) as stopped:
            run(cfg, tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == -1 and handed_over == [13]  # handed over after the checkpoint
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "interrupted" and "requeued" in metrics["message"]

    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path)  # the requeued job: trainer.resume=auto continues
    assert_same_run(tmp_path, reference)
    first, second = metrics_of(tmp_path)["attempts"]
    assert "requeued" in first["reason"] and first["end_iteration"] == 13
    assert second["start_iteration"] == 13 and second["reason"] == "completed"


# ----- faults: a full disk, a read-only folder, an unreadable last checkpoint ----------------------


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failed_checkpoint_write_keeps_the_last_one_and_the_run_continues_later(
    error: int, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """A full disk or a read-only folder at the checkpoint of iteration 20: the run stops as interrupted
    with a clear message, checkpoint 10 survives intact, and once the disk is fixed the run continues
    exactly."""
    from cnnbench.engine.trainer import CheckpointNotWritten, run
    from cnnbench.rundir import checkpoint as checkpoint_module

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    save = torch.save

    def save_on_a_full_disk(obj: dict, f, *args, **kwargs) -> None:
        if obj["iteration"] == 20:
            f.write(b"half a checkpoint")
            raise OSError(error, os.strerror(error), str(f.name))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    with pytest.raises(CheckpointNotWritten) as stopped:
        run(cfg, tmp_path)
    assert stopped.value.exit_code == 75 and os.strerror(error) in str(stopped.value)
    assert checkpoint_of(tmp_path)["iteration"] == 10  # the last good one, readable
    assert not list(tmp_path.glob(".*.tmp"))
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "interrupted" and "last good checkpoint" in metrics["message"]

    monkeypatch.setattr(torch, "save", save)
    run(cfg, tmp_path)  # the same command once the disk has room: trainer.resume=auto continues
    assert_same_run(tmp_path, reference)
    assert checkpoint_module.has_checkpoint(tmp_path)


def test_an_unreadable_last_checkpoint_falls_back_to_the_previous_one(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli, one_thread: None
) -> None:
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = compose_tiny(f"trainer.max_iters={ITERS}", "trainer.ckpt_every=10")
    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 25:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    with pytest.raises(SystemExit):
        run(cfg, tmp_path)
    assert checkpoint_of(tmp_path)["iteration"] == 25
    previous = torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)
    assert previous["iteration"] == 20  # the one before, kept until the new one was durable
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"torn by a crash")  # the last one lost

    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path, resume=True)  # continues from iteration 20, still exactly
    assert_same_run(tmp_path, reference)
