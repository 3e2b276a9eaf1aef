"""A plain `pip install .` (not editable) carries everything a command needs: configs, the engine, the
DataLoader baseline. Slow: it builds and installs a wheel into a fresh virtual environment."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pip_install_then_bench_with_the_baseline(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies (torch, hydra, ...) come from this environment: point the new one at its
    # site-packages (a plain path, so this environment's editable cnnbench is not picked up).
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "outer.pth").write_text("\n".join([ours, *site.getsitepackages()]) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [str(python), "-c", "import cnnbench; print(cnnbench.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    ).stdout
    assert where.startswith(purelib), where  # the installed wheel, not the source tree

    cnnbench = venv / "bin" / "cnnbench"
    helped = subprocess.run([str(cnnbench), "bench", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and "baseline" in helped.stdout, helped.stdout + helped.stderr
    tiny = [
        "data=synthetic", "data.train_size=256", "data.test_size=128", "model=plain", "depth=8",
        "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.compile=false",
        "trainer.precision=fp32", "trainer.channels_last=true",
        "bench.iters=2", "bench.warmup=1", "bench.repeats=1",
    ]  # fmt: skip
    bench = subprocess.run(
        [str(cnnbench), "bench", "--json", *tiny], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    result = json.loads(bench.stdout[bench.stdout.index("{") :])
    assert result["speedup"] is not None and result["baseline_train_img_per_s"] > 0
    # The sweep listing's launcher ships in the wheel (hydra_plugins/, found by Hydra's own plugin scan
    # there): `config -m` lists the jobs, and `train -m` checks them with it before launching.
    listed = subprocess.run(
        [str(cnnbench), "config", "-m", "experiment=degradation_quick"], capture_output=True, text=True,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "4 jobs" in listed.stdout and "depth=56,model=resnet" in listed.stdout


def test_every_subpackage_ships_in_the_wheel():
    """pyproject.toml lists packages by hand: a new folder of cnnbench left out would be missing from a
    wheel install (an editable install would still find it, so the rest of the suite cannot tell)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cnnbench").rglob("__init__.py")}
    assert found - listed == set(), f"not in pyproject.toml's packages: {sorted(found - listed)}"
