"""torchrun with 2 CPU processes (gloo): one set of logs, and a loss close to the single-process run's."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = [
    "data=digits", "model=plain", "depth=8", "trainer.max_iters=40", "trainer.batch_size=32",
    "trainer.log_every=10", "trainer.eval_every=20", "trainer.ckpt_every=20",
]  # fmt: skip


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    result.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return result


def _explain(result: subprocess.CompletedProcess, run_dir: Path | None = None) -> str:
    """All that a failed launch said (torchrun's and every rank's stderr), for the failure message."""
    parts = [
        f"command: {shlex.join(result.args)}",
        f"exit code {result.returncode} after {result.seconds:.1f} s",  # type: ignore[attr-defined]
        f"--- stderr ---\n{result.stderr[-20_000:]}",
        f"--- stdout ---\n{result.stdout[-5_000:]}",
    ]
    log = run_dir / "train.log" if run_dir else None
    if log and log.is_file():
        parts.append(f"--- {log} ---\n{log.read_text()[-5_000:]}")
    return "\n".join(parts)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.mark.slow  # ~20 s: two torchrun processes and a reference run
def test_torchrun_two_cpu_processes_match_a_single_process_run(tmp_path: Path) -> None:
    ddp = _run([*TORCHRUN, "-m", "cnnbench", "train", *ARGS, "hydra.run.dir=ddp"], tmp_path)
    assert ddp.returncode == 0, _explain(ddp, tmp_path / "ddp")
    single = _run([sys.executable, "-m", "cnnbench", "train", *ARGS, "hydra.run.dir=single"], tmp_path)
    assert single.returncode == 0, _explain(single, tmp_path / "single")

    run = tmp_path / "ddp"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1, "only rank 0 writes TensorBoard events"
    assert (run / "train.log").read_text().count("Done:") == 1, "only rank 0 logs to the run's file"
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    assert not list(tmp_path.glob("outputs")), "no rank wrote a run folder of its own"

    ddp_metrics = json.loads((run / "metrics.json").read_text())
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp_metrics["status"] == "completed" and ddp_metrics["iteration"] == 40
    # Same global batches (each rank takes its half of the single run's batch), but BatchNorm statistics
    # over 16 instead of 32 images (per-rank BN) and each rank's own crops/flips: close, not identical.
    assert abs(ddp_metrics["train_loss"] - single_metrics["train_loss"]) < 0.15


@pytest.mark.slow  # two processes under torchrun, about 17 s
def test_sync_bn_on_cpus_is_a_clear_error(tmp_path: Path) -> None:
    result = _run([*TORCHRUN, "-m", "cnnbench", "train", *ARGS, "trainer.sync_bn=true"], tmp_path)
    assert result.returncode != 0, _explain(result)
    assert "trainer.sync_bn=true needs GPUs" in result.stdout + result.stderr, _explain(result)
