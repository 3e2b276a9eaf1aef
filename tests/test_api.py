"""The Python API (`import cnnbench`): the CLI's code path, its errors raised, the interpreter kept intact."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from conftest import TINY
from typer.testing import CliRunner

import cnnbench
from cnnbench.errors import CnnbenchError

RUN = [*TINY, "trainer.precision=fp32", "trainer.channels_last=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> cnnbench.Run:
    return cnnbench.train(*RUN, run_dir=tmp_path_factory.mktemp("api") / "run")


def test_train_returns_the_run_the_cli_would_have_written(trained: cnnbench.Run) -> None:
    assert trained.status == "completed"
    assert trained.metrics["iteration"] == 20 and trained.metrics["model"] == "plain"
    assert trained.config.depth == 8 and trained.config.data.name == "digits"
    history = trained.history()
    assert [step for step, _ in history["error/test"]] == [10, 20]
    assert history["error/test"][-1][1] == pytest.approx(trained.metrics["test_error"])
    model = trained.model()
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert "status='completed'" in repr(trained)


def test_the_interpreter_is_left_as_it_was(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    first = cnnbench.train(*RUN, "trainer.max_iters=10", run_dir="first")
    second = cnnbench.train(*RUN, "trainer.max_iters=10", "seed=1")  # the CLI's default folder
    assert os.getcwd() == str(tmp_path)
    assert root.handlers == handlers and root.level == level
    assert first.status == second.status == "completed"
    assert second.path.parent == tmp_path / "outputs" / "plain8" and second.path.is_dir()


def test_the_same_call_returns_a_completed_run_without_training_again(trained: cnnbench.Run) -> None:
    checkpoint = trained.path / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    again = cnnbench.train(*RUN, run_dir=trained.path)
    assert again.path == trained.path and again.status == "completed"
    assert checkpoint.stat().st_mtime_ns == before


def test_keyword_overrides_are_overrides(tmp_path: Path) -> None:
    run = cnnbench.train(*TINY, trainer__max_iters=10, seed=3, run_dir=tmp_path / "run")
    assert run.metrics["iteration"] == 10 and run.config.seed == 3


def test_a_refusal_raises_the_clis_message_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.cli import app

    monkeypatch.chdir(tmp_path)
    printed = CliRunner().invoke(app, ["train", *TINY, "model=resnett"])
    assert printed.exit_code == 2
    with pytest.raises(CnnbenchError) as raised:
        cnnbench.train(*TINY, "model=resnett")
    message = str(raised.value)
    assert "resnett" in message and " ".join(message.split()) in " ".join(printed.output.split())
    assert not (tmp_path / "outputs").exists()
    with pytest.raises(CnnbenchError, match="not command-line flags"):
        cnnbench.train("-m", "depth=20")


def test_ctrl_c_interrupts_and_the_same_call_continues(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.engine.step import TrainStep

    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 12:
            signal.raise_signal(signal.SIGINT)  # the notebook's interrupt button sends SIGINT

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    stopped = cnnbench.train(*RUN, run_dir=tmp_path / "run")
    assert stopped.status == "interrupted" and stopped.metrics["iteration"] == 12
    monkeypatch.setattr(TrainStep, "__call__", step)
    finished = cnnbench.train(*RUN, run_dir=tmp_path / "run")
    assert finished.status == "completed" and finished.metrics["iteration"] == 20


def test_sweep_load_and_report(tmp_path: Path) -> None:
    sweep = cnnbench.sweep(*TINY, "trainer.max_iters=10", "model=plain,resnet", sweep_dir=tmp_path / "sweep")
    assert len(sweep) == 2 and {run.config.model.name for run in sweep} == {"plain", "resnet"}
    assert all(run.status == "completed" for run in sweep)
    loaded = cnnbench.load(tmp_path / "sweep")
    assert isinstance(loaded, cnnbench.Sweep) and [r.path for r in loaded] == [r.path for r in sweep]
    assert isinstance(cnnbench.load(sweep[0].path), cnnbench.Run)

    result = cnnbench.report(sweep)
    rows = result.rows.to_dict("records") if hasattr(result.rows, "to_dict") else result.rows
    assert sorted(row["model"] for row in rows) == ["plain", "resnet"]
    assert len(result.figure.axes) >= 2
    assert not (tmp_path / "sweep" / "report.png").exists()  # nothing written until save()
    out = result.save(tmp_path / "report")
    assert {"report.png", "report.md", "report.csv"} <= {p.name for p in out.iterdir()}
    with pytest.raises(CnnbenchError, match="neither a run folder"):
        cnnbench.load(tmp_path)
    with pytest.raises(CnnbenchError, match="No runs found"):
        cnnbench.report(tmp_path / "report")


def test_a_sweep_with_a_bad_job_is_refused_before_any_starts(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError) as raised:
        cnnbench.sweep(*TINY, "depth=8,21", sweep_dir=tmp_path / "sweep")
    assert "21" in str(raised.value)
    assert not (tmp_path / "sweep").exists()
    assert json.dumps(str(raised.value))  # a plain message, not a Hydra object
