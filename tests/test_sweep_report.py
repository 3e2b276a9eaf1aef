"""A sweep ends with its report (the `hydra.callbacks.report` callback), and `cnnbench report` without a
folder reports the latest sweep.

Every sweep here runs in-process through the basic launcher (the jobs one after the other, the callback
in the same process): plain/ResNet-8 on digits for 4 iterations, fp32, one torch thread.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import logging_kept
from typer.testing import CliRunner

from cnnbench.cli import app
from cnnbench.commands import sweep_report

REPORT_FILES = ("report.png", "report.md", "report.csv")
FAST = [
    "data=digits",
    "depth=8",
    "trainer.max_iters=4",
    "trainer.batch_size=32",
    "trainer.log_every=2",
    "trainer.eval_every=2",
    "trainer.ckpt_every=2",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.compile=false",
]
OFF = "hydra.callbacks.report.enabled=false"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fastest on 2 shared cores
    yield
    torch.set_num_threads(threads)


def sweep(cli, folder: str, *overrides: str):
    return cli("train", "-m", *FAST, *overrides, f"hydra.sweep.dir={folder}")


def report_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "report.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def statuses(folder: Path) -> list[str]:
    return sorted(row["status"] for row in report_rows(folder))


def reports_under(root: Path) -> list[Path]:
    return sorted(p for name in REPORT_FILES for p in root.rglob(name))


def stop_at_step(monkeypatch, at: int, how) -> None:
    """The sweep's ``at``-th training step (counted over the process: the jobs run one after another here)
    runs ``how`` after the step."""
    from cnnbench.engine.step import TrainStep

    step, calls = TrainStep.__call__, [0]

    def counted(self, iteration: int) -> None:
        step(self, iteration)
        calls[0] += 1
        if calls[0] == at:
            how()

    monkeypatch.setattr(TrainStep, "__call__", counted)


def test_a_sweep_ends_with_its_report_and_the_next_commands(cli, tmp_path):
    result = sweep(cli, "sweep", "model=plain,resnet", "seed=0")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "sweep"
    assert all((folder / name).is_file() for name in REPORT_FILES)
    assert statuses(folder) == ["completed", "completed"]
    assert "Wrote sweep/report.png, sweep/report.md and sweep/report.csv." in result.output
    last = result.output.rstrip().splitlines()[-5:]
    assert last[0] == "Wrote sweep/report.png, sweep/report.md and sweep/report.csv."
    assert last[1] == "Sweep sweep: all 2 job(s) completed."
    assert last[2] == "Next:"
    assert last[3].strip().startswith("cnnbench status sweep")
    assert last[4].strip().startswith("tensorboard --logdir sweep")
    assert "cnnbench resume" not in result.output  # nothing to resume


def test_a_failed_job_is_reported_as_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fail() -> None:
        raise RuntimeError("simulated failure")

    stop_at_step(monkeypatch, 2, fail)  # the first job's second step
    with logging_kept():
        result = CliRunner().invoke(
            app, ["train", "-m", *FAST, "model=plain,resnet", "hydra.sweep.dir=sweep"]
        )
    assert isinstance(result.exception, RuntimeError)  # the sweep's own outcome is unchanged
    folder = tmp_path / "sweep"
    assert statuses(folder) == ["completed", "failed"]
    assert "Sweep sweep: 1 of 2 job(s) completed." in result.output
    assert "  failed: model=plain" in result.output
    assert "cnnbench resume sweep" in result.output


def test_an_interrupted_sweep_is_reported_and_its_resume_updates_the_report(cli, tmp_path, monkeypatch):
    from cnnbench.engine.step import TrainStep

    step = TrainStep.__call__
    # The second job's second step: Ctrl-C (a graceful stop); the third job never starts.
    stop_at_step(monkeypatch, 4 + 2, lambda: signal.raise_signal(signal.SIGINT))
    result = sweep(cli, "sweep", "model=plain", "seed=0,1,2")
    assert result.exit_code == 128 + signal.SIGINT, result.output
    folder = tmp_path / "sweep"
    assert statuses(folder) == ["completed", "interrupted"]
    assert "Sweep sweep: 1 of 3 job(s) completed." in result.output
    assert "  interrupted: seed=1" in result.output
    assert "  missing (never started): seed=2" in result.output
    assert "cnnbench resume sweep" in result.output
    before = (folder / "report.csv").stat().st_mtime_ns

    monkeypatch.setattr(TrainStep, "__call__", step)
    result = cli("resume", "sweep")
    assert result.exit_code == 0, result.output
    assert (folder / "report.csv").stat().st_mtime_ns > before
    assert [row["seeds"] for row in report_rows(folder)] == ["0 1 2"]  # one configuration, every seed
    assert statuses(folder) == ["completed"]
    # Resume sweeps into the folder's absolute path: the lines name it so.
    assert f"Sweep {folder}: all 3 job(s) completed." in result.output
    assert "cnnbench resume" not in result.output.split(f"Sweep {folder}:")[-1]


def test_switched_off_no_report_also_when_resumed(cli, tmp_path):
    result = sweep(cli, "sweep", "model=plain", "seed=0", OFF)
    assert result.exit_code == 0, result.output
    assert not reports_under(tmp_path) and "Next:" not in result.output
    result = cli("resume", "sweep")  # the sweep's recorded hydra overrides keep it off
    assert result.exit_code == 0, result.output
    assert not reports_under(tmp_path) and "Next:" not in result.output


def test_report_without_a_folder_takes_the_latest_sweep(cli, tmp_path):
    older = Path("outputs/multirun/2026-01-01_00-00-00_000000")
    newer = Path("outputs/multirun/2026-01-02_00-00-00_000000")
    assert sweep(cli, str(older), "model=plain", "seed=0", OFF).exit_code == 0
    shutil.copytree(tmp_path / older, tmp_path / newer)
    os.utime(tmp_path / older / "multirun.yaml")  # written last: the stamp still says which is newer
    result = cli("report")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"Reporting the latest sweep, {newer} ")
    assert reports_under(tmp_path) == [
        tmp_path / newer / name for name in ("report.csv", "report.md", "report.png")
    ]


def test_report_without_a_folder_and_no_sweep_says_how_to_give_one(cli, tmp_path):
    result = cli("report")
    assert result.exit_code == 2
    assert result.output.startswith("error: No sweep under outputs/multirun")
    assert "Give `cnnbench report` a folder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_config_m_and_a_refused_sweep_write_no_report(cli, tmp_path, monkeypatch):
    reported: list[Path] = []
    monkeypatch.setattr(sweep_report, "report_sweep", reported.append)
    assert cli("config", "-m", *FAST, "model=plain,resnet").exit_code == 0
    refused = sweep(cli, "sweep", "model=plain,resnet", "trainer.max_iters=-1")
    assert refused.exit_code == 2 and "Next:" not in refused.output
    assert reported == [] and not reports_under(tmp_path)


def test_a_report_that_cannot_be_written_leaves_the_sweep_as_it_ended(cli, tmp_path, monkeypatch):
    from cnnbench.reporting import tables

    def no_room(rows, path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tables, "write_csv", no_room)
    result = sweep(cli, "sweep", "model=plain", "seed=0")
    assert result.exit_code == 0, result.output
    assert "error: The sweep's report was not written:" in result.output and "Traceback" not in result.output
    assert not reports_under(tmp_path)
    assert result.output.rstrip().splitlines()[-1].strip().startswith("tensorboard --logdir sweep")
