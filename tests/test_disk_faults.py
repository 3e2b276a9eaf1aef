"""Real disk faults: every file cnnbench writes, failing for real in a `python -m cnnbench` child process.

The child runs with a file-size limit (``RLIMIT_FSIZE``) and SIGXFSZ ignored, so that a write past the limit
fails with EFBIG in the kernel, as a write to a full disk fails with ENOSPC (both are "no room", as is
EDQUOT). The limit counts per file, so each case picks a limit above every file the command writes before
the one under test and below that one (sizes measured on the reference run, or files written in an order
that makes them differ enough). Each case then checks the one-paragraph error and exit 75, that nothing was
left half-written in place of a good file (the last good checkpoint loads), and that the same command
succeeds once there is room (training: continues from the checkpoint, bit for bit the uninterrupted run).

A read-only run folder and data root are a read-only bind mount as root (root writes through permission
bits), their permission bits otherwise; ENOSPC itself is tested on a small tmpfs where this process may
mount one (slow suite).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch

from cnnbench.rundir.checkpoint import load_checkpoint
from cnnbench.rundir.files import no_room, os_error_of

TIMEOUT = 300
# A tiny run: checkpoints at 5 and 10, one evaluation (at 10, between them). The checkpoint at 10 holds the
# evaluation's numbers too, so it is larger than the one at 5: a limit of the size of the first stops the
# second. torch.save aligns its records to 64 bytes, which can absorb a few numbers: with the weights'
# moving average (EMA) the evaluation also records the EMA's numbers, over 64 bytes more, so the growth
# survives the alignment whatever else a checkpoint gains. Explicit precision and layout: no probe.
TINY = [
    "data=digits",
    "model=plain",
    "depth=8",
    "trainer.batch_size=32",
    "trainer.max_iters=10",
    "trainer.ckpt_every=5",
    "trainer.eval_every=10",
    "trainer.log_every=10",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.ema_decay=0.9",
    "reuse.mode=never",  # every case trains the reference's config again, in a folder of its own
]
# One thread: bitwise-comparable runs (and the fastest on 2 shared cores).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("CNNBENCH_RESUME", None)


def cnnbench(*args: object, cwd: Path, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m cnnbench ARGS` in a child process whose files may be at most ``limit`` bytes each."""

    def in_the_child() -> None:
        # Ignored, SIGXFSZ would otherwise kill the process at the first write past the limit; write()
        # then fails with EFBIG instead, which is what the product must handle.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "cnnbench", *map(str, args)],
        cwd=cwd,
        env=ENV,
        preexec_fn=in_the_child,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def train(run_dir: Path, *extra: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    return cnnbench("train", *TINY, *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, limit=limit)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def assert_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit ``code`` with one ``error:`` paragraph (no traceback) that holds every needle; returns it."""
    assert result.returncode == code, output(result)
    assert "Traceback" not in result.stdout + result.stderr, output(result)
    assert result.stderr.count("error:") == 1, output(result)
    message = result.stderr[result.stderr.index("error:") :].strip()
    assert "\n" not in message, output(result)  # one paragraph
    for needle in needles:
        assert needle in message, output(result)
    return message


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, output(result)
    assert "Traceback" not in result.stdout + result.stderr, output(result)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` (but the lock, which every writer takes) with its mtime and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def leftovers(folder: Path) -> list[Path]:
    """Temporary files and folders that a failed write must not leave behind."""
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".eval-")]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_continued_to_the_end(run_dir: Path, reference: Path, attempts: int = 2) -> None:
    """Completed, after ``attempts`` starts, with the reference run's weights and numbers exactly."""
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and len(metrics["attempts"]) == attempts, metrics
    expected = metrics_of(reference)
    for key in ("train_loss", "train_error", "test_loss", "test_error", "best_test_error"):
        assert metrics[key] == expected[key], key
    ours, theirs = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt")
    assert ours["iteration"] == theirs["iteration"] == 10
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


def copy_run(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where, symlinks=True))


# ----- the runs the cases start from --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run, completed without a limit."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert_ok(train(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def checkpoint_limit(reference: Path) -> int:
    """The size of the checkpoint at iteration 5: that one fits, the one at 10 does not."""
    first, second = (
        (reference / "checkpoint.prev.pt").stat().st_size,
        (reference / "checkpoint.pt").stat().st_size,
    )
    assert first < second, "the checkpoint at 10 must be larger than the one at 5 for this limit to stop it"
    return first


@pytest.fixture(scope="module")
def interrupted(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_limit: int
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The tiny run stopped by its checkpoint at 10 crossing the limit: interrupted, checkpoint 5 kept."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    return run_dir, train(run_dir, limit=checkpoint_limit)


# ----- what counts as no room -----------------------------------------------------------------------------


def test_a_full_device_and_the_file_size_limit_are_no_room_also_inside_torch_save(tmp_path: Path) -> None:
    """/dev/full fails every write with a real ENOSPC; torch.save reports it as its own RuntimeError, which
    must still be read as no room (it was a traceback at best.pt). EFBIG from the kernel: a child process."""
    with pytest.raises(OSError) as full, open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x")
    assert full.value.errno == errno.ENOSPC and no_room(full.value)
    f = open("/dev/full", "wb")  # noqa: SIM115 (closed below, where its own flush fails too)
    try:
        with pytest.raises((RuntimeError, OSError)) as wrapped:
            torch.save({"w": torch.zeros(100_000)}, f)  # as save_checkpoint writes: a buffered file
    finally:
        with suppress(OSError):
            f.close()
    assert no_room(wrapped.value) and os_error_of(wrapped.value).errno == errno.ENOSPC
    script = (
        "import errno, resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))\n"
        "from cnnbench.rundir.files import no_room\n"
        "try:\n"
        "    with open(sys.argv[1], 'wb') as f:\n"
        "        f.write(b'x' * 100)\n"
        "except OSError as exc:\n"
        "    print(exc.errno == errno.EFBIG, no_room(exc))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big")], capture_output=True, text=True, timeout=60
    )
    assert child.stdout.split() == ["True", "True"], child.stdout + child.stderr
    assert no_room(OSError(errno.EDQUOT, "Disk quota exceeded"))  # a quota: no room as well
    assert not no_room(OSError(errno.EROFS, "Read-only file system"))  # a read-only folder is not "no room"


# ----- training: each file of the run ----------------------------------------------------------------------


def test_a_checkpoint_with_no_room_stops_the_run_and_the_same_command_continues_it(
    reference: Path, interrupted: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    run_dir, result = interrupted
    assert_error(
        result,
        75,
        f"Could not write {run_dir / 'checkpoint.pt'} (File too large",
        "iteration 10",
        "last good checkpoint (iteration 5) is kept",
        f"cnnbench resume {run_dir}",
    )
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "interrupted" and "File too large" in metrics["message"]
    assert load_checkpoint(run_dir / "checkpoint.pt", fallback=False)["iteration"] == 5  # whole, loadable
    assert not leftovers(run_dir)

    again = copy_run(run_dir, tmp_path / "run")
    assert_ok(train(again))  # the same command, with room: trainer.resume=auto continues from 5
    assert "Resuming" in (again / "train.log").read_text()
    assert_continued_to_the_end(again, reference)


@pytest.mark.slow
def test_best_pt_with_no_room_stops_the_run_and_the_same_command_continues_it(tmp_path: Path) -> None:
    """With a validation split, best.pt is written at the evaluation of 10, before that iteration's
    checkpoint, and it is as large: the limit of the checkpoint at 5 stops it first."""
    val = "data.val_size=200"
    reference = tmp_path / "reference" / "run"
    reference.parent.mkdir()
    assert_ok(train(reference, val))
    limit = (reference / "checkpoint.prev.pt").stat().st_size
    assert (reference / "best.pt").stat().st_size > limit
    run_dir = tmp_path / "run"
    assert_error(
        train(run_dir, val, limit=limit),
        75,
        f"Could not write {run_dir / 'best.pt'} (File too large",
        "last good checkpoint (iteration 5) is kept",
    )
    assert metrics_of(run_dir)["status"] == "interrupted"
    assert load_checkpoint(run_dir / "checkpoint.pt", fallback=False)["iteration"] == 5
    assert not (run_dir / "best.pt").exists() and not leftovers(run_dir)

    assert_ok(train(run_dir, val))
    assert_continued_to_the_end(run_dir, reference)
    assert load_checkpoint(run_dir / "best.pt")["iteration"] == 10


def tensorboard_start_size(run_dir: Path) -> int:
    """Bytes of the first three records of the run's event file: the file's header, the hparams and the
    Custom Scalars layout, which a fresh run writes before any point."""
    import struct

    (events,) = run_dir.glob("events.out.tfevents.*")
    data, offset = events.read_bytes(), 0
    for _ in range(3):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        offset += 8 + 4 + length + 4  # length, its CRC, the record, its CRC
    return offset


@pytest.mark.slow
@pytest.mark.parametrize("name", ["env.json", "events"])
def test_a_fresh_runs_first_records_with_no_room_stop_it_and_the_same_command_starts_it_again(
    name: str, reference: Path, tmp_path: Path
) -> None:
    """A fresh run writes env.json (about 1.5 KB), then TensorBoard's hparams and layout (over 2 KB):
    1 KB stops env.json, 2 KB the event file. Hydra's own record (.hydra/, up to 4 KB) is left out
    (hydra.output_subdir=null) so that it does not cross the limit first. Before any checkpoint: the same
    command starts the run again."""
    limit = {"env.json": 1024, "events": 2048}[name]
    assert (reference / "metrics.json").stat().st_size < 1024 < (reference / "env.json").stat().st_size
    assert (reference / "env.json").stat().st_size + 300 < 2048 < tensorboard_start_size(reference)
    run_dir = tmp_path / "run"
    result = train(run_dir, "hydra.output_subdir=null", limit=limit)
    assert_error(result, 75, f"Could not write {run_dir}/{name}", "before its first checkpoint")
    if name == "events":  # metrics.json, with the stop's message, fits under 2 KB, not under 1 KB
        assert metrics_of(run_dir)["status"] == "interrupted"
    else:
        assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "checkpoint.pt").exists() and not leftovers(run_dir)

    assert_ok(train(run_dir, "hydra.output_subdir=null"))
    assert_continued_to_the_end(run_dir, reference, attempts=2 if name == "events" else 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metrics.json", "train.log"])
def test_a_resumed_runs_records_with_no_room_stop_it_and_the_checkpoint_stays(
    name: str, reference: Path, interrupted: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """A resumed run appends to train.log (a few hundred bytes on disk), starts an event file (88 bytes)
    and rewrites metrics.json (over 1 KB). train.log: `cnnbench resume` with a limit one byte under its
    size on disk. metrics.json: the same train command without train.log (and without Hydra's record)
    under 512 bytes. Either keeps what it held; the failed attempt, which metrics.json cannot record,
    leaves two attempts once the run is done."""
    run_dir = copy_run(interrupted[0], tmp_path / "run")
    on_disk = {n: (run_dir / n).read_bytes() for n in ("metrics.json", "train.log")}
    # Written before either: run.lock's holder (about 130 bytes), the event file's header (88 bytes).
    assert len(on_disk["train.log"]) > 256 and len(on_disk["metrics.json"]) > 1024
    if name == "train.log":
        command = ["resume", run_dir]
        result = cnnbench(*command, cwd=tmp_path, limit=len(on_disk["train.log"]) - 1)
    else:
        command = [
            "train",
            *TINY,
            f"hydra.run.dir={run_dir}",
            "hydra/job_logging=none",
            "hydra.output_subdir=null",
        ]
        result = cnnbench(*command, cwd=tmp_path, limit=512)
    assert_error(result, 75, f"Could not write {run_dir / name} (File too large", "(iteration 5) is kept")
    assert (run_dir / "metrics.json").read_bytes() == on_disk["metrics.json"]  # not half-written
    assert load_checkpoint(run_dir / "checkpoint.pt", fallback=False)["iteration"] == 5
    assert not leftovers(run_dir)

    assert_ok(cnnbench(*command, cwd=tmp_path))
    assert_continued_to_the_end(run_dir, reference)


# ----- eval, report, export ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, limit", [("eval.json", 4096), pytest.param("confusion.png", 16384, marks=pytest.mark.slow)]
)
def test_eval_with_no_room_leaves_the_earlier_results_whole_and_succeeds_later(
    name: str, limit: int, reference: Path, tmp_path: Path
) -> None:
    """A second evaluation (another entry: eval.json grows past 4 KB; confusion.png is over 16 KB)."""
    run_dir = copy_run(reference, tmp_path / "run")
    assert_ok(cnnbench("eval", run_dir, cwd=tmp_path))
    assert (run_dir / "eval.json").stat().st_size < 4096 and (
        run_dir / "confusion.png"
    ).stat().st_size > limit
    before = snapshot(run_dir)
    result = cnnbench("eval", run_dir, "--tta", "flip", cwd=tmp_path, limit=limit)
    assert_error(
        result, 75, f"Could not write {run_dir / name} (File too large", "run the same command again"
    )
    after = snapshot(run_dir)
    if name == "eval.json":
        assert after == before
    else:  # eval.json holds the new entry; the figure and TensorBoard are as they were
        assert after["confusion.png"] == before["confusion.png"]
        assert {k for k in after if ".eval" in k} == {k for k in before if ".eval" in k}
    assert not leftovers(run_dir)

    assert_ok(cnnbench("eval", run_dir, "--tta", "flip", cwd=tmp_path))
    assert len(json.loads((run_dir / "eval.json").read_text())["entries"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name, limit", [("report.csv", 256), ("report.md", 1024), ("report.png", 8192)])
def test_report_with_no_room_leaves_the_earlier_report_whole_and_succeeds_later(
    name: str, limit: int, reference: Path, tmp_path: Path
) -> None:
    """report.csv (about 0.5 KB), report.md (1.5 KB) and report.png (over 30 KB), written in that order."""
    out = tmp_path / "out"
    assert_ok(cnnbench("report", reference, "--out", out, cwd=tmp_path))
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    assert sizes["report.csv"] > 256 and 1024 < sizes["report.md"] < 8192 < sizes["report.png"], sizes
    assert sizes["report.csv"] < 1024
    before = snapshot(out)
    result = cnnbench("report", reference, "--out", out, cwd=tmp_path, limit=limit)
    assert_error(result, 75, f"Could not write {out / name} (File too large", "earlier report")
    assert snapshot(out) == before and not leftovers(out)
    assert_ok(cnnbench("report", reference, "--out", out, cwd=tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name, limit", [("model.ts.pt.json", 65536), ("model.ts.pt", 200_000)])
def test_export_with_no_room_leaves_nothing_half_written_and_succeeds_later(
    name: str, limit: int, reference: Path, tmp_path: Path
) -> None:
    """The sidecar (about 100 KB: the per-pixel mean) is written first, then the model (over 300 KB)."""
    out = tmp_path / "out" / "model.ts.pt"
    result = cnnbench("export", reference, "--out", out, cwd=tmp_path, limit=limit)
    assert_error(result, 75, f"Could not write {out.parent / name} (File too large", "Nothing was exported")
    assert list(out.parent.iterdir()) == []
    assert_ok(cnnbench("export", reference, "--out", out, cwd=tmp_path))
    assert 65536 < (out.parent / "model.ts.pt.json").stat().st_size < 200_000 < out.stat().st_size
    assert torch.jit.load(str(out))(torch.rand(1, 3, 32, 32)).shape == (1, 10)


# ----- ENOSPC: a full file system ---------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own (root only, where mounting is allowed), unmounted afterwards."""
    folder = tmp_path / "fs"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_file_system_stops_the_run_at_a_checkpoint_and_it_continues_once_there_is_room(
    reference: Path, small_filesystem: Path
) -> None:
    """A real ENOSPC: the file system holds one checkpoint and a half, so the second checkpoint's temporary
    file finds it full. Grown (remounted larger), the same command continues the run."""
    size = (reference / "checkpoint.pt").stat().st_size
    subprocess.run(["mount", "-o", f"remount,size={size * 3 // 2}", str(small_filesystem)], check=True)
    run_dir = small_filesystem / "run"
    assert_error(train(run_dir), 75, "No space left on device: the disk is full", "(iteration 5) is kept")
    assert load_checkpoint(run_dir / "checkpoint.pt", fallback=False)["iteration"] == 5
    assert not leftovers(run_dir)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_filesystem)], check=True)
    assert_ok(train(run_dir))
    assert_continued_to_the_end(run_dir, reference)


# ----- a read-only run folder, a read-only data root -----------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for the child processes: as root, a read-only bind mount of it onto itself
    (root writes through permission bits, not through a read-only mount: EROFS); otherwise its permission
    bits (EACCES)."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(0o555 if stat.S_ISDIR(mode) else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(stat.S_IMODE(mode))
        return
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot make a folder read-only here (a bind mount): {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


@pytest.mark.parametrize(
    "command",
    [
        "eval",
        pytest.param("export", marks=pytest.mark.slow),
        pytest.param("resume", marks=pytest.mark.slow),
        pytest.param("report", marks=pytest.mark.slow),
    ],
)
def test_a_read_only_run_folder_is_refused_in_one_paragraph_and_left_as_it_was(
    command: str, reference: Path, tmp_path: Path
) -> None:
    """Exit 2, not 75: nothing was done, and waiting will not make the folder writable. (A checkpoint that
    meets a folder made read-only during training stops the run with 75, as for a full disk: the run
    is interrupted and the same command continues it.)"""
    run_dir = copy_run(reference, tmp_path / "run")
    if command == "resume":  # a run that is not completed: its metrics say interrupted
        metrics = metrics_of(run_dir)
        (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    before = snapshot(run_dir)
    with read_only(run_dir):
        result = cnnbench(command, run_dir, cwd=tmp_path)
    assert_error(result, 2, str(run_dir), "writable")
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_read_only_data_root_is_refused_in_one_paragraph_and_left_as_it_was(tmp_path: Path) -> None:
    """A dataset to download into a data root that cannot take it: exit 2, nothing written there, and no
    run folder left behind."""
    root = tmp_path / "data"
    root.mkdir()
    with read_only(root):
        result = cnnbench(
            "train",
            "data=cifar10",
            f"data.root={root}",
            "data.download=true",
            "data.url=file:///nowhere.tar.gz",
            "model=plain",
            "depth=8",
            "trainer.max_iters=2",
            "hydra.run.dir=run",
            cwd=tmp_path,
        )
    assert_error(result, 2, str(root), "data.root")
    assert list(root.iterdir()) == [] and not (tmp_path / "run").exists()
