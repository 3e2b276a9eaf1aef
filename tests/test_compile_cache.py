"""One torch.compile cache for the jobs of a sweep (cnnbench/fastpath/compilecache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TINY

from cnnbench.fastpath import compilecache
from cnnbench.fastpath.compilecache import ENV, SWEEP_CACHE_DIR, use_shared_cache


@pytest.fixture
def clean_env(monkeypatch):
    """No cache folder chosen by anyone (and none remembered as ours) before the test, and the variable
    as it was after it (set first, so that the undo restores it even when code set it meanwhile)."""
    monkeypatch.setenv(ENV, "")
    monkeypatch.delenv(ENV)
    monkeypatch.setattr(compilecache, "_ours", None)


def test_a_sweep_points_inductor_at_its_folder_and_a_users_choice_wins(clean_env, monkeypatch, tmp_path):
    first = tmp_path / "sweep1" / SWEEP_CACHE_DIR
    assert use_shared_cache(first) == first and os.environ[ENV] == str(first.resolve())
    assert not first.exists()  # made by Inductor when something compiles: no empty folder in eager sweeps
    # Another sweep later in the same process (the basic launcher runs jobs in-process) replaces ours.
    second = tmp_path / "sweep2" / SWEEP_CACHE_DIR
    assert use_shared_cache(second) == second and os.environ[ENV] == str(second.resolve())
    # Inductor writes its default folder into the variable once it has used it: not a user's choice.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(ENV, os.path.abspath(default_cache_dir()))
    assert use_shared_cache(first) == first and os.environ[ENV] == str(first.resolve())
    # The user's own folder is kept.
    monkeypatch.setenv(ENV, str(tmp_path / "mine"))
    assert use_shared_cache(second) is None and os.environ[ENV] == str(tmp_path / "mine")


def test_a_sweep_job_sets_the_cache_before_anything_compiles(clean_env, monkeypatch, tmp_path):
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine import parts as parts_module

    seen = {}
    real = parts_module.resolve_fast_path

    def resolve_fast_path(*args, **kwargs):  # the first thing that may compile (the probe)
        seen["cache"] = os.environ.get(ENV)
        return real(*args, **kwargs)

    monkeypatch.setattr(parts_module, "resolve_fast_path", resolve_fast_path)
    cfg = compose_config(
        [*TINY, "trainer.precision=fp32", "trainer.channels_last=true", "trainer.compile=false"]
    )
    sweep = tmp_path / "sweep"
    parts_module.build_parts(cfg, sweep_record=sweep / "fastpath.json")
    assert seen["cache"] == str((sweep / SWEEP_CACHE_DIR).resolve())


JOB = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.trainer import run
    from torch._dynamo.utils import counters

    sweep = Path(sys.argv[1])
    run(compose_config(sys.argv[3:]), sweep / sys.argv[2], sweep_dir=sweep)
    print(json.dumps(dict(counters["inductor"])))
    """
)


@pytest.mark.slow
def test_the_second_compiled_job_of_a_sweep_reads_the_firsts_compiled_graphs(monkeypatch, tmp_path):
    """Two tiny compiled runs (fresh processes, as joblib workers or SLURM jobs) in one sweep folder: the
    second compiles nothing. About 2.5 minutes on 2 busy cores (the first compiles from scratch)."""
    monkeypatch.setenv(ENV, "")
    monkeypatch.delenv(ENV)  # the subprocesses inherit no user's cache folder
    overrides = [
        *TINY,
        "trainer.compile=true",
        "trainer.compile_mode=default",  # the CUDA default: no autotuning, the fastest compile
        "trainer.precision=fp32",
        "trainer.channels_last=true",
        "trainer.max_iters=2",
        "trainer.eval_every=2",
        "trainer.log_every=2",
        "trainer.ckpt_every=2",
    ]
    sweep = tmp_path / "sweep"
    counters = []
    for job in ("seed=0", "seed=1"):
        done = subprocess.run(
            [sys.executable, "-c", JOB, str(sweep), job, *overrides, job],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=Path(__file__).parent,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        counters.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = counters
    assert first.get("fxgraph_cache_miss", 0) > 0  # the first job compiled (forward, backward, eval)
    assert second.get("fxgraph_cache_hit", 0) == first["fxgraph_cache_miss"]
    assert second.get("fxgraph_cache_miss", 0) == 0
    assert (sweep / SWEEP_CACHE_DIR / "fxgraph").is_dir()
