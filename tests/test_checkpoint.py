"""checkpoint.pt: atomic writes that survive a crash, weights_only loads, the RNG states they carry."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.checkpoint import load_checkpoint, save_checkpoint


class Payload:
    """Not a tensor, container or number: a weights_only load must refuse to build it."""


def state(iteration: int, size: int = 1000) -> dict:
    return {"iteration": iteration, "model": {"w": torch.full((size,), float(iteration))}}


@pytest.fixture
def global_rngs() -> Iterator[None]:
    """Put Python's, NumPy's and torch's global generators back as they were."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path, global_rngs: None) -> None:
    from cnnbench.core.rng import rng_state, seed_everything, set_rng_state

    seed_everything(123)
    random.random(), np.random.rand(3), torch.rand(3)
    np.random.randn()  # leaves the second Gaussian of a pair cached (has_gauss=1): that is state too
    save_checkpoint({**state(0), "rng": rng_state()}, tmp_path / "checkpoint.pt")

    def draw() -> tuple:
        return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()

    expected = draw()
    seed_everything(999)
    set_rng_state(load_checkpoint(tmp_path / "checkpoint.pt")["rng"])
    assert draw() == expected


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(1), path)
    before = path.read_bytes()

    def disk_full(obj: object, f, *args, **kwargs) -> None:
        f.write(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(state(2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_a_process_killed_while_writing_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """A real SIGKILL in a loop of 16 MB writes: whatever checkpoint.pt holds is one whole checkpoint."""
    path = tmp_path / "checkpoint.pt"
    writer = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from cnnbench.rundir.checkpoint import save_checkpoint
        for i in range(10**6):
            save_checkpoint({{"iteration": i, "model": {{"w": torch.full((4_000_000,), float(i))}}}},
                            Path({str(path)!r}))
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line) >= 2:
                break
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".checkpoint.pt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        proc.kill()  # mid-write, almost surely: the temporary file was there a moment ago
        proc.wait(60)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] >= 2
    assert torch.equal(loaded["model"]["w"], torch.full((4_000_000,), float(loaded["iteration"])))


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: None, "No checkpoint at"),
        (lambda p: p.write_bytes(b""), "cannot be read"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "cannot be read"),
        (lambda p: torch.save([1, 2, 3], p), "not a cnnbench checkpoint"),
        (lambda p: torch.save({"model": {}, "iteration": 1, "extra": Payload()}, p), "cannot be read"),
    ],
    ids=["missing", "empty", "garbage", "a list", "arbitrary objects"],
)
def test_an_unreadable_checkpoint_is_a_clear_error_and_stays_as_it_was(
    tmp_path: Path, write, message: str
) -> None:
    path = tmp_path / "checkpoint.pt"
    write(path)
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(CnnbenchError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)  # one paragraph
    assert (path.read_bytes() if path.exists() else None) == before


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(7, size=100_000), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnbenchError, match="truncated, corrupt or not a cnnbench checkpoint"):
        load_checkpoint(path)
    assert path.read_bytes() == data[: len(data) // 2]


# ----- checkpoints written by other cnnbench versions ------------------------------------------------------

OLD_RUN = [
    "data=digits",
    "model=plain",
    "depth=8",
    "trainer.batch_size=32",
    "trainer.max_iters=10",
    "trainer.ckpt_every=5",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
]


def compose_old_run():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=OLD_RUN)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained to the end in this process: checkpoint.prev.pt is its checkpoint at 5."""
    from cnnbench.engine.trainer import run

    run_dir = tmp_path_factory.mktemp("old") / "run"
    run(compose_old_run(), run_dir)
    return run_dir


def as_if_stopped_at_5(finished_run: Path, folder: Path, *drop: str, version: str | None = None) -> Path:
    """The run as it was when stopped at 5, its checkpoint without ``drop`` (as an older version wrote
    it, recording no version of its own); ``version``: the one its env.json names."""
    import json
    import shutil

    run_dir = Path(shutil.copytree(finished_run, folder))
    checkpoint = torch.load(run_dir / "checkpoint.prev.pt", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 5 and checkpoint["cnnbench_version"]
    for key in (*drop, "cnnbench_version"):
        del checkpoint[key]
    (run_dir / "checkpoint.prev.pt").unlink()
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    if version is not None:
        env = json.loads((run_dir / "env.json").read_text())
        (run_dir / "env.json").write_text(json.dumps({**env, "cnnbench_version": version}))
    return run_dir


def test_a_checkpoint_without_the_random_streams_continues_and_train_log_says_it_is_not_exact(
    finished_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the RNG, sampler, augmentation and logging-window state, the run continues from 5 to the
    end, says what was missing and what that means, and indeed ends with other weights than the run never
    stopped (another batch order), still a run of the same config."""
    from cnnbench.engine.trainer import run

    lacking = ("rng", "sampler", "augment_rng", "window")
    run_dir = as_if_stopped_at_5(finished_run, tmp_path / "run", *lacking, version="0.0.7")
    with caplog.at_level("WARNING", logger="cnnbench"):
        run(compose_old_run(), run_dir, resume=True)
    (warning,) = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert "iteration 5" in warning and "cnnbench 0.0.7 (as the run's env.json says" in warning
    assert ", ".join(lacking) in warning and "not bit for bit" in warning
    assert "the batch order is shuffled afresh" in warning
    continued = load_checkpoint(run_dir / "checkpoint.pt")
    uninterrupted = load_checkpoint(finished_run / "checkpoint.pt")
    assert continued["iteration"] == uninterrupted["iteration"] == 10
    assert continued["cnnbench_version"] == uninterrupted["cnnbench_version"]  # written by this version now
    assert any(not torch.equal(continued["model"][k], v) for k, v in uninterrupted["model"].items())


def test_a_checkpoint_without_the_optimizer_state_is_refused_naming_its_version(
    finished_run: Path, tmp_path: Path
) -> None:
    from cnnbench.engine.trainer import run

    run_dir = as_if_stopped_at_5(finished_run, tmp_path / "run", "optimizer", version="0.0.7")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "run.lock"}
    with pytest.raises(CnnbenchError) as refused:
        run(compose_old_run(), run_dir, resume=True)
    message = str(refused.value)
    assert "\n" not in message and refused.value.exit_code == 2
    assert "written by cnnbench 0.0.7" in message and "lacks the optimizer's state" in message
    assert "pip install 'cnnbench==0.0.7'" in message and "Nothing was changed" in message
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "run.lock"}
    assert after == before
