"""Shared helpers: a tiny, fast training configuration and an in-process CLI runner."""

from __future__ import annotations

import os
import tempfile

import pytest
from typer.testing import CliRunner

# The fast-path probe's cache (trainer.precision/channels_last=auto): one per test session, never the
# user's own, inherited by the subprocesses the tests start. The probe itself runs once per session.
os.environ["CNNBENCH_CACHE"] = tempfile.mkdtemp(prefix="cnnbench-test-cache-")

# depth 8 = one block per stage: a full run of tens of iterations takes seconds on a CPU.
TINY = [
    "data=digits",
    "model=plain",
    "depth=8",
    "trainer.max_iters=20",
    "trainer.batch_size=32",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.ckpt_every=10",
]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Run `cnnbench ARGS` in-process with tmp_path as the working directory."""
    from cnnbench.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke
