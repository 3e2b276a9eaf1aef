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
from cnnbench.runs.checkpoint import load_checkpoint, save_checkpoint


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
        from cnnbench.runs.checkpoint import save_checkpoint
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
