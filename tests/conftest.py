"""Shared helpers: a tiny, fast training configuration and an in-process CLI runner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

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
