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
TRAINED = [*RUN, "trainer.log_grad_every=10"]  # the module's trained run, with gradient flow logged
SWEEP = [*RUN, "trainer.max_iters=10", "model=plain,resnet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> cnnbench.Run:
    return cnnbench.train(*TRAINED, run_dir=tmp_path_factory.mktemp("api") / "run")


def test_train_returns_the_run_the_cli_would_have_written(trained: cnnbench.Run) -> None:
    assert trained.status == "completed"
    assert trained.metrics["iteration"] == 20 and trained.metrics["model"] == "plain"
    assert trained.config.depth == 8 and trained.config.data.name == "digits"
    history = trained.history()
    assert [step for step, _ in history["error/test"]] == [10, 20]
    assert history["error/test"][-1][1] == pytest.approx(trained.metrics["test_error"])
    flow = trained.history(["grad_norm/stage/"])  # a prefix: every stage's gradient norm
    assert "grad_norm/stage/classifier" in flow and all(t.startswith("grad_norm/stage/") for t in flow)
    assert all([step for step, _ in points] == [10, 20] for points in flow.values())
    model = trained.model()
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert "status='completed'" in repr(trained)


def test_the_interpreter_is_left_as_it_was(tmp_path: Path, monkeypatch) -> None:
    import random

    import numpy
    import torch

    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    torch.manual_seed(1234), random.seed(1234), numpy.random.seed(1234)
    expected = (torch.rand(3), random.random(), numpy.random.rand())
    torch.manual_seed(1234), random.seed(1234), numpy.random.seed(1234)
    first = cnnbench.train(*RUN, "trainer.max_iters=10", run_dir="first")
    second = cnnbench.train(*RUN, "trainer.max_iters=10", "seed=1")  # the CLI's default folder
    # The notebook's own random stream goes on where it was (training seeded the RNGs with seed 0, 1).
    after = (torch.rand(3), random.random(), numpy.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]
    assert os.getcwd() == str(tmp_path)
    assert root.handlers == handlers and root.level == level
    assert first.status == second.status == "completed"
    assert second.path.parent == tmp_path / "outputs" / "plain8" and second.path.is_dir()


def test_the_same_call_returns_a_completed_run_without_training_again(trained: cnnbench.Run) -> None:
    checkpoint = trained.path / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    again = cnnbench.train(*TRAINED, run_dir=trained.path)
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


def test_ctrl_c_in_a_sweep_stops_it_and_the_same_call_finishes_it(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.engine.step import TrainStep

    step = TrainStep.__call__
    calls = {"n": 0}

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        calls["n"] += 1
        if calls["n"] == 15:  # the second job (plain first, 10 iterations each), at its 5th iteration
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    stopped = cnnbench.sweep(*SWEEP, sweep_dir=tmp_path / "sweep")
    assert [(r.config.model.name, r.status, r.metrics["iteration"]) for r in stopped] == [
        ("plain", "completed", 10),
        ("resnet", "interrupted", 5),
    ]
    monkeypatch.setattr(TrainStep, "__call__", step)
    finished = cnnbench.sweep(*SWEEP, sweep_dir=tmp_path / "sweep")
    assert [(r.status, r.metrics["iteration"]) for r in finished] == [("completed", 10), ("completed", 10)]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> cnnbench.Sweep:
    """plain-8 and resnet-8, 10 iterations each (read-only for the tests that use it)."""
    root = tmp_path_factory.mktemp("api-sweep")
    return cnnbench.sweep(*SWEEP, sweep_dir=root / "sweep")


def test_sweep_load_and_report(tiny_sweep: cnnbench.Sweep, tmp_path: Path) -> None:
    sweep = tiny_sweep
    assert len(sweep) == 2 and {run.config.model.name for run in sweep} == {"plain", "resnet"}
    assert all(run.status == "completed" for run in sweep)
    loaded = cnnbench.load(sweep.path)
    assert isinstance(loaded, cnnbench.Sweep) and [r.path for r in loaded] == [r.path for r in sweep]
    assert isinstance(cnnbench.load(sweep[0].path), cnnbench.Run)

    # The sweep ended with its own report (as `cnnbench train -m`); report() leaves it as it is.
    written = {p.name: p.stat().st_mtime_ns for p in sweep.path.glob("report.*")}
    assert set(written) == {"report.png", "report.md", "report.csv"}
    result = cnnbench.report(sweep)
    rows = result.rows.to_dict("records") if hasattr(result.rows, "to_dict") else result.rows
    assert sorted(row["model"] for row in rows) == ["plain", "resnet"]
    assert len(result.figure.axes) >= 2
    assert {p.name: p.stat().st_mtime_ns for p in sweep.path.glob("report.*")} == written  # until save()
    out = result.save(tmp_path / "report")
    assert {"report.png", "report.md", "report.csv"} <= {p.name for p in out.iterdir()}
    with pytest.raises(CnnbenchError, match="neither a run folder"):
        cnnbench.load(tmp_path)
    with pytest.raises(CnnbenchError, match="No runs found"):
        cnnbench.report(tmp_path / "report")


def test_the_same_sweep_call_again_continues_it_and_other_overrides_are_refused(
    tiny_sweep: cnnbench.Sweep, tmp_path: Path
) -> None:
    def unchanged() -> dict[Path, int]:  # multirun.yaml: Hydra records each launch (as `cnnbench resume`)
        return {
            p: p.stat().st_mtime_ns
            for p in tiny_sweep.path.rglob("*")
            if p.is_file() and p.parent != tiny_sweep.path
        }

    files = unchanged()
    again = cnnbench.sweep(*SWEEP, sweep_dir=tiny_sweep.path)  # a notebook cell run twice
    assert [r.path for r in again] == [r.path for r in tiny_sweep]
    assert all(r.status == "completed" and r.metrics["iteration"] == 10 for r in again)
    assert unchanged() == files  # finished jobs are skipped: nothing trained or rewritten
    with pytest.raises(CnnbenchError, match="holds a sweep of other overrides"):
        cnnbench.sweep(*SWEEP, "seed=5", sweep_dir=tiny_sweep.path)
    assert unchanged() == files
    after = cnnbench.train(*RUN, "trainer.max_iters=4", run_dir=tmp_path / "after")  # train after sweep
    assert after.status == "completed" and after.metrics["iteration"] == 4


def test_a_sweep_folder_given_as_a_run_folder_is_refused(tiny_sweep: cnnbench.Sweep, cli) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_sweep.path.rglob("*")}
    with pytest.raises(CnnbenchError, match="is a sweep folder") as raised:
        cnnbench.train(*RUN, run_dir=tiny_sweep.path)
    assert f"cnnbench resume {tiny_sweep.path}" in str(raised.value)
    result = cli("train", *RUN, f"hydra.run.dir={tiny_sweep.path}")  # the CLI: the same refusal
    assert result.exit_code == 2 and "is a sweep folder" in result.output and "Traceback" not in result.output
    assert {p: p.stat().st_mtime_ns for p in tiny_sweep.path.rglob("*")} == before


def _records(rows) -> list[dict]:
    return rows.to_dict("records") if hasattr(rows, "to_dict") else rows


def test_analyze_returns_the_clis_numbers_and_figure_and_writes_only_on_save(
    tiny_sweep: cnnbench.Sweep, tmp_path: Path, cli
) -> None:
    import csv

    before = {p for run in tiny_sweep for p in run.path.rglob("*")}
    analysis = cnnbench.analyze(tiny_sweep, samples=32, at_init=True, device="cpu")
    assert {p for run in tiny_sweep for p in run.path.rglob("*")} == before  # nothing written
    assert len(analysis.figure.axes) == 3
    rows = _records(analysis.rows)
    result = cli(
        "analyze", *(str(r.path) for r in tiny_sweep), "--samples", "32", "--at-init", "--out", "cli"
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "cli" / "analysis.csv", newline="", encoding="utf-8") as f:
        from_cli = list(csv.DictReader(f))
    assert [(r["run"], r["layer"]) for r in rows] == [(r["run"], r["layer"]) for r in from_cli]
    for ours, theirs in zip(rows, from_cli, strict=True):
        assert float(ours["response_std"]) == pytest.approx(float(theirs["response_std"]), rel=1e-6)
        assert float(ours["grad_norm_init"]) == pytest.approx(float(theirs["grad_norm_init"]), rel=1e-6)
    saved = analysis.save(tmp_path / "saved")
    assert {"analysis.png", "analysis.csv"} <= {p.name for p in saved.iterdir()}
    with pytest.raises(CnnbenchError, match="neither a run folder"):
        cnnbench.analyze(tmp_path / "saved")


def test_landscape_returns_its_points_and_figure(tiny_sweep: cnnbench.Sweep, tmp_path: Path) -> None:
    result = cnnbench.landscape(tiny_sweep, resolution=3, samples=16, out=tmp_path / "land", device="cpu")
    assert result.complete and (result.done, result.total) == (6, 6)
    rows = _records(result.rows)
    assert sorted({r["run"] for r in rows}) == ["plain-8", "resnet-8"] and len(rows) == 6
    assert [r["alpha"] for r in rows[:3]] == [-1.0, 0.0, 1.0] and all(r["loss"] > 0 for r in rows)
    assert len(result.figure.axes) == 2 and (tmp_path / "land" / "landscape.png").is_file()
    again = cnnbench.landscape(tiny_sweep, resolution=3, samples=16, out=tmp_path / "land", device="cpu")
    assert _records(again.rows) == rows  # every point was done: read back, not evaluated again
    with pytest.raises(CnnbenchError, match="--resolution"):
        cnnbench.landscape(tiny_sweep, resolution=1, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_sweep_with_a_bad_job_is_refused_before_any_starts(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError) as raised:
        cnnbench.sweep(*TINY, "depth=8,21", sweep_dir=tmp_path / "sweep")
    assert "21" in str(raised.value)
    assert not (tmp_path / "sweep").exists()
    assert json.dumps(str(raised.value))  # a plain message, not a Hydra object
