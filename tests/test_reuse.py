"""Never train the same run twice: run identity, reuse across sweeps, `cnnbench runs`, unique folders.

The sweeps are in-process `cnnbench train -m` calls of tiny runs (digits, plain-8/14, 4 iterations).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import logging_kept
from typer.testing import CliRunner

from cnnbench.rundir.identity import identity_of, identity_of_settings, identity_settings, run_identity

TINY = [
    "data=digits",
    "model=plain",
    "trainer.max_iters=4",
    "trainer.batch_size=32",
    "trainer.log_every=2",
    "trainer.eval_every=2",
    "trainer.ckpt_every=2",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.compile=false",
    "seed=0",
]


class Cli:
    """`cnnbench ARGS` in-process, in ``cwd``."""

    def __init__(self, cwd: Path) -> None:
        self.cwd, self.runner = cwd, CliRunner()

    def __call__(self, *args: str, code: int = 0):
        before = os.getcwd()
        os.chdir(self.cwd)
        try:
            from cnnbench.cli import app

            with logging_kept():
                result = self.runner.invoke(app, list(args), catch_exceptions=False)
        finally:
            os.chdir(before)
        assert result.exit_code == code, result.output[-4000:]
        return result


def sweeps_in(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "multirun").iterdir())


@pytest.fixture(scope="module")
def reused(tmp_path_factory):
    """Sweep 1: depth=8. Sweep 2: depth=8,14 (the first job reused). Into the default outputs/."""
    cwd = tmp_path_factory.mktemp("reuse")
    cli = Cli(cwd)
    first = cli("train", "-m", *TINY, "depth=8")
    second = cli("train", "-m", *TINY, "depth=8,14")
    one, two = sweeps_in(cwd)
    return cli, cwd, one, two, first.output, second.output


# ---- identity ---------------------------------------------------------------------------------------


BASE = {
    "model": {"name": "plain", "default_depth": 20, "block": "basic"},
    "data": {"name": "cifar10", "root": "/data/a", "download": True, "val_size": 0},
    "optimizer": {"lr": 0.1, "momentum": 0.9},
    "trainer": {"max_iters": 100, "precision": "auto", "device": "auto", "ckpt_every": 10, "log_every": 5},
    "depth": 20,
    "seed": 0,
    "reuse": {"mode": "auto", "store": None, "wait_s": 5},
}


def _changed(**dotted):
    config = json.loads(json.dumps(BASE))
    for key, value in dotted.items():
        *path, leaf = key.split("__")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return identity_of(config).digest


def test_identity_counts_what_changes_the_result_and_nothing_else():
    base = identity_of(BASE).digest
    assert len(base) == 64
    assert _changed(seed=1) != base
    assert _changed(depth=32) != base
    assert _changed(optimizer__lr=0.01) != base
    assert _changed(trainer__precision="fp32") != base  # auto counts as asked
    assert _changed(trainer__log_every=10) != base  # the logged train error is a window's mean
    for key, value in {
        "data__root": "/elsewhere",
        "data__download": False,
        "trainer__device": "cuda:1",
        "trainer__ckpt_every": 500,
        "reuse__mode": "never",
        "model__default_depth": 56,
        "optimizer__lr": 0.1000,
    }.items():
        assert _changed(**{key: value}) == base, key
    # Key order and 1 vs 1.0 do not matter; the hydra section (output folders) is not part of it.
    shuffled = dict(reversed(list(BASE.items())))
    assert identity_of({**shuffled, "hydra": {"run": {"dir": "x"}}}).digest == base
    assert _changed(trainer__max_iters=100.0) == base


def test_identity_is_the_same_in_another_process():
    code = textwrap.dedent(
        f"""
        from cnnbench.rundir.identity import identity_of
        print(identity_of({BASE!r}).digest)
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == identity_of(BASE).digest
    settings = identity_settings(BASE)
    assert identity_of_settings(dict(reversed(list(settings.items())))).digest == identity_of(BASE).digest


# ---- reuse --------------------------------------------------------------------------------------------


def test_the_second_sweep_trains_only_the_new_job(reused):
    _, _, one, two, _, output = reused
    (source,) = [p for p in one.iterdir() if p.is_dir() and (p / "metrics.json").exists()]
    job8, job14 = two / "depth=8", two / "depth=14"
    record = json.loads((job8 / "reused.json").read_text())
    assert Path(record["source"]) == source.resolve() and record["identity"] == run_identity(source)
    assert os.path.samefile(job8 / "checkpoint.pt", source / "checkpoint.pt")
    assert (job8 / "metrics.json").read_text() == (source / "metrics.json").read_text()
    assert list(job8.glob("events.out.tfevents.*"))  # the curves appear in the new sweep's TensorBoard
    assert not (job14 / "reused.json").exists() and json.loads((job14 / "metrics.json").read_text())["status"]
    assert "Reused 1 of 2 jobs" in output and "training time saved" in output
    # identity.json says what .hydra/config.yaml says (old folders without it get the same identity).
    from omegaconf import OmegaConf

    recorded = json.loads((source / "identity.json").read_text())["identity"]
    assert recorded == identity_of(OmegaConf.load(source / ".hydra" / "config.yaml")).digest
    (job14 / "identity.json").unlink()
    assert run_identity(job14) == identity_of(OmegaConf.load(job14 / ".hydra" / "config.yaml")).digest


def test_the_reused_folder_works_for_every_command(reused, tmp_path):
    cli, _, _, two, _, _ = reused
    job8 = two / "depth=8"
    status = json.loads(cli("status", str(two), "--json").output)
    assert sorted(j["state"] for j in status[0]["jobs"]) == ["completed", "completed"]
    report = cli("report", str(two), "--out", str(tmp_path / "report"))
    assert (tmp_path / "report" / "report.csv").read_text().count("\n") >= 3, report.output
    cli("eval", str(job8), "--json")
    assert (job8 / "eval.json").exists()
    cli("export", str(job8), "--out", str(tmp_path / "m.ts.pt"))
    import cnnbench

    assert cnnbench.load(job8).status == "completed" and cnnbench.load(job8).model() is not None


def test_reuse_mode_never_trains_again(reused):
    cli, cwd, *_ = reused
    cli("train", "-m", *TINY, "depth=8", "reuse.mode=never")
    (newest,) = [p for p in sweeps_in(cwd)[-1].iterdir() if (p / ".hydra").is_dir()]
    assert not (newest / "reused.json").exists()
    assert json.loads((newest / "metrics.json").read_text())["status"] == "completed"


def _store_with(source: Path, store: Path, status: str) -> Path:
    """A store holding a copy of ``source`` whose metrics.json says ``status``."""
    copy = store / "elsewhere" / "run"
    shutil.copytree(source, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "status": status}))
    return copy


def test_a_diverged_run_is_never_reused(reused, tmp_path):
    cli, _, _, two, _, _ = reused
    copy = _store_with(two / "depth=14", tmp_path / "store", "diverged")
    result = cli(
        "train", *TINY, "depth=14", f"reuse.store={tmp_path / 'store'}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert "Not reused" in result.output and str(copy) in result.output
    assert not (tmp_path / "r" / "reused.json").exists()
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "completed"


HOLD = (
    "import json, sys, time\n"
    "from pathlib import Path\n"
    "from cnnbench.rundir.lock import acquire\n"
    "folder, seconds, then = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]\n"
    "lock = acquire(folder, 'train')\n"
    "print('held', flush=True)\n"
    "time.sleep(seconds)\n"
    "if then != '-':  # the run ends: its metrics.json says how\n"
    "    m = json.loads((folder / 'metrics.json').read_text())\n"
    "    (folder / 'metrics.json').write_text(json.dumps({**m, 'status': then}))\n"
    "lock.release()\n"
)


def _hold(folder: Path, seconds: float, then: str = "-") -> subprocess.Popen:
    """Another process that holds ``folder``'s run.lock for ``seconds`` (a run training there)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds), then], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_in_progress_is_never_trained_twice_at_once(reused, tmp_path):
    cli, _, _, two, _, _ = reused
    copy = _store_with(two / "depth=14", tmp_path / "store", "running")
    holder = _hold(copy, 120)
    try:
        store, run_dir = f"reuse.store={tmp_path / 'store'}", tmp_path / "r"
        result = cli(
            "train", *TINY, "depth=14", store, "reuse.wait_s=0.3", f"hydra.run.dir={run_dir}", code=2
        )
        assert "being trained in" in result.output and str(copy) in result.output
        assert not run_dir.exists()  # refused: nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_run_in_progress_is_waited_for_then_reused(reused, tmp_path):
    cli, _, _, two, _, _ = reused
    copy = _store_with(two / "depth=14", tmp_path / "store", "running")
    holder = _hold(copy, 1.0, then="completed")
    try:
        store, run_dir = f"reuse.store={tmp_path / 'store'}", tmp_path / "r"
        result = cli("train", *TINY, "depth=14", store, "reuse.wait_s=60", f"hydra.run.dir={run_dir}")
        assert "waiting for it" in result.output
        assert json.loads((run_dir / "reused.json").read_text())["source"] == str(copy.resolve())
    finally:
        holder.kill()
        holder.wait()


def test_an_identity_claimed_by_another_job_is_not_trained_here(reused, tmp_path):
    from cnnbench.rundir.index import identity_folder

    cli, _, _, two, _, _ = reused
    store = tmp_path / "store"
    claim = identity_folder(store, run_identity(two / "depth=14"))
    claim.mkdir(parents=True)
    holder = _hold(claim, 120)  # a job that decided to train this identity a moment ago
    try:
        run_dir = tmp_path / "r"
        result = cli(
            "train", *TINY, "depth=14", f"reuse.store={store}", "reuse.wait_s=0.3",
            f"hydra.run.dir={run_dir}", code=2,
        )  # fmt: skip
        assert "another job" in result.output and not run_dir.exists()
    finally:
        holder.kill()
        holder.wait()


# ---- the runs table ----------------------------------------------------------------------------------


def test_runs_table_csv_json_and_filters(reused):
    cli, cwd, *_ = reused
    table = cli("runs").output
    assert "(reused)" in table and "completed" in table
    rows = json.loads(cli("runs", "--json").output)
    assert len(rows) == 4 and {r["depth"] for r in rows} == {8, 14}
    only = json.loads(cli("runs", "outputs", "depth=14", "status=completed", "--json").output)
    assert [r["depth"] for r in only] == [14]
    assert len(json.loads(cli("runs", "reused=true", "--json").output)) == 1
    assert len(json.loads(cli("runs", "optimizer.lr=0.1", "depth=8", "--json").output)) == 3
    assert cli("runs", "--csv").output.splitlines()[0].startswith("identity,model,depth,seed")
    assert "neither a column" in cli("runs", "colour=red", code=2).output
    import cnnbench

    before = os.getcwd()
    os.chdir(cwd)
    try:
        frame = cnnbench.runs(model="plain", depth=8)
        assert len(frame) == 3 and set(frame["status"]) == {"completed"}
    finally:
        os.chdir(before)


def test_report_over_a_selection_takes_one_run_per_identity(reused, tmp_path):
    cli, *_ = reused
    result = cli("runs", "depth=8,14", "--report", "--out", str(tmp_path / "sel"))
    csv = (tmp_path / "sel" / "report.csv").read_text()
    assert csv.count("\n") == 3, csv  # plain-8 and plain-14: header + two rows
    assert "appears in several runs" not in result.output


# ---- the index and the folders --------------------------------------------------------------------------


def test_the_index_is_rebuilt_when_deleted(reused):
    from cnnbench.rundir.index import INDEX_NAME, is_built, runs_with

    _, cwd, one, _, _, _ = reused
    root = cwd / "outputs"
    shutil.rmtree(root / INDEX_NAME)
    (source,) = [p for p in one.iterdir() if p.is_dir() and (p / "metrics.json").exists()]
    found = runs_with(root, run_identity(source))
    assert source in found and len(found) >= 2 and is_built(root)


def _claim(folder: str, queue) -> None:
    from cnnbench.commands.app import _claim_folder

    queue.put(str(_claim_folder(Path(folder))))


def test_two_starts_with_the_same_stamp_get_two_folders(reused, tmp_path, monkeypatch):
    # Two processes at once claim the same stamped folder: each gets its own.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    target = tmp_path / "outputs" / "plain8" / "stamp"
    procs = [context.Process(target=_claim, args=(str(target), queue)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert sorted(Path(queue.get()).name for _ in procs) == ["stamp", "stamp_1"]
    # And a run started with a forced stamp whose folder exists gets the next one.
    cli, cwd, *_ = reused
    monkeypatch.setenv("CNNBENCH_RUN_STAMP", "forced")
    cli("train", *TINY, "depth=8")
    cli("train", *TINY, "depth=8")
    assert sorted(p.name for p in (cwd / "outputs" / "plain8").iterdir()) == ["forced", "forced_1"]


def test_a_sweep_whose_stamped_folder_exists_gets_its_own(tmp_path, monkeypatch):
    import hydra.core.utils

    class Frozen:  # every ${now:...} stamp is the same one
        @staticmethod
        def now():
            return type("Now", (), {"strftime": lambda self, pattern: "frozen"})()

    monkeypatch.setattr(hydra.core.utils, "datetime", Frozen)
    earlier = tmp_path / "outputs" / "multirun" / "frozen" / "job"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}")
    Cli(tmp_path)("train", "-m", *TINY, "depth=8", "reuse.mode=never")
    (job,) = [p for p in (tmp_path / "outputs" / "multirun" / "frozen_1").iterdir() if p.is_dir()]
    assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
    assert (earlier / "metrics.json").read_text() == "{}"
