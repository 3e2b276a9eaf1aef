"""An optimizer ``_target_`` read back from a run or sweep folder is imported only when it is a torch.optim
class or the user trusts it (CNNBENCH_TRUST_TARGETS); the user's own command line may name any class.

The foreign class lives in a module that leaves a marker file when it is imported, so every test can tell
whether its code ran.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY
from omegaconf import OmegaConf
from typer.testing import CliRunner

from cnnbench.core.optim import TRUST_ENV, check_saved_target, optimizer_class, trusted_target
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import METRICS_NAME, MULTIRUN_RECORD, SAVED_CONFIG

MODULE = "cnnbench_foreign_optimizer"
FOREIGN = f"{MODULE}.NotAnOptimizer"
FAST = ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"]  # no probe


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module on sys.path that writes the returned file when imported; nobody trusts anything yet."""
    folder = tmp_path / "modules"
    folder.mkdir()
    made = tmp_path / "imported"
    (folder / f"{MODULE}.py").write_text(
        f"import pathlib\npathlib.Path({str(made)!r}).write_text('imported')\n\n\n"
        "class NotAnOptimizer:\n    pass\n\n\n"
        "import torch\n\n\nclass OwnSGD(torch.optim.SGD):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    sys.modules.pop(MODULE, None)
    yield made
    sys.modules.pop(MODULE, None)


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def _foreign_run(folder: Path, target: str = FOREIGN) -> Path:
    """A run folder as an interrupted run leaves it, whose saved config names ``target``."""
    cfg = _compose()
    cfg.optimizer._target_ = target
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / SAVED_CONFIG)
    (folder / METRICS_NAME).write_text(
        json.dumps({"status": "interrupted", "iteration": 10, "max_iters": 20})
    )
    return folder


def test_only_torch_optim_classes_are_trusted_unless_the_user_trusts_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    assert trusted_target("torch.optim.SGD") and trusted_target("torch.optim.adamw.AdamW")
    for untrusted in (FOREIGN, "torch.optimx.SGD", "torch.optim", "os.system", "torch.optim.SGD;x", "SGD"):
        assert not trusted_target(untrusted), untrusted
    monkeypatch.setenv(TRUST_ENV, f"other.Opt, {FOREIGN}")
    assert trusted_target(FOREIGN) and not trusted_target("os.system")
    monkeypatch.setenv(TRUST_ENV, "1")
    assert trusted_target("os.system")


def test_resume_refuses_a_foreign_target_before_importing_it(tmp_path: Path, marker: Path, cli) -> None:
    run = _foreign_run(tmp_path / "run")
    result = cli("resume", str(run))
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"optimizer._target_='{FOREIGN}'" in output and f"{TRUST_ENV}={FOREIGN}" in output
    assert "Traceback" not in result.output
    assert not marker.exists() and MODULE not in sys.modules


def test_a_trusted_foreign_target_is_imported(
    tmp_path: Path, marker: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _foreign_run(tmp_path / "run")
    monkeypatch.setenv(TRUST_ENV, FOREIGN)
    result = cli("resume", str(run))
    # Imported (the user trusted it), then refused for what it is: no optimizer class.
    assert result.exit_code == 2 and "is not an importable torch.optim.Optimizer" in result.output
    assert marker.exists()


def test_a_resumed_sweep_refuses_a_foreign_target_before_any_job_starts(tmp_path: Path, marker: Path) -> None:
    from cnnbench.commands.resume import resume_sweep, resume_sweep_job

    sweep = tmp_path / "sweep"
    _foreign_run(sweep / "seed=0")
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": {"task": [], "hydra": []}}}), sweep / MULTIRUN_RECORD
    )
    with pytest.raises(CnnbenchError, match=r"seed=0/\.hydra/config\.yaml names optimizer\._target_"):
        resume_sweep(sweep)
    # A job that never started is composed from the sweep's recorded overrides: checked in the job too.
    composed = _compose(f"optimizer._target_={FOREIGN}")
    with pytest.raises(CnnbenchError, match=rf"{MULTIRUN_RECORD} names optimizer\._target_"):
        resume_sweep_job(composed, sweep / "seed=1", sweep)
    assert not (sweep / "seed=1").exists() and not marker.exists()


def test_the_users_own_command_line_may_name_any_class(marker: Path) -> None:
    from cnnbench.rundir.validate import check_config

    cfg = _compose(f"optimizer._target_={MODULE}.OwnSGD")
    check_config(cfg)  # a config composed from conf/ and the command line is the user's choice
    assert optimizer_class(cfg.optimizer).__name__ == "OwnSGD" and marker.exists()
    with pytest.raises(CnnbenchError, match="names optimizer._target_"):
        check_saved_target(cfg.optimizer, "a run folder")  # the same config read back from a folder


def test_eval_export_and_run_model_never_import_the_saved_target(tmp_path: Path, marker: Path) -> None:
    """They rebuild the network only; the optimizer of the saved config is never built."""
    import cnnbench
    from cnnbench.cli import app

    run = tmp_path / "run"
    args = ["train", *TINY, *FAST, "trainer.max_iters=10", f"hydra.run.dir={run}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = OmegaConf.load(run / SAVED_CONFIG)
    cfg.optimizer._target_ = FOREIGN
    OmegaConf.save(cfg, run / SAVED_CONFIG)
    result = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(run), "--format", "state_dict"])
    assert result.exit_code == 0, result.output
    assert cnnbench.Run(run).model() is not None
    assert not marker.exists() and MODULE not in sys.modules
