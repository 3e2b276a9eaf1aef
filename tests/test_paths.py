"""Run and sweep folders named as users name them (spaces, '=', ',', quotes, non-ASCII letters) work
through every command that takes a folder, and through the Python API."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

import cnnbench
from cnnbench.core.overrides import hydra_value
from cnnbench.errors import CnnbenchError

FAST = ["trainer.precision=fp32", "trainer.channels_last=false"]
# Hydra's job folder names hold '=' and ','; users add spaces, quotes and their own letters.
AWKWARD = "Läufe von José/depth=8,model=plain 'erste'"


@pytest.mark.parametrize(
    "text",
    ["plain/path_1.2", "a b", "depth=20,model=plain", "it's", "back\\slash", "end\\", "[x]", "Ünï", ""],
)
def test_hydra_value_reads_back_as_given(text: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"hydra.run.dir={hydra_value(text)}")
    assert parsed.value() == text


def test_a_folder_with_an_interpolation_is_refused() -> None:
    with pytest.raises(CnnbenchError, match=r"holds '\$\{'"):
        hydra_value("/data/${USER}/runs")


def test_every_command_takes_an_awkward_run_folder(cli, tmp_path) -> None:
    run_dir = tmp_path / AWKWARD
    result = cli("train", *TINY, *FAST, f"hydra.run.dir={hydra_value(str(run_dir))}")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"

    assert cli("resume", str(run_dir)).exit_code == 0  # completed: nothing to do, through the same path
    status = cli("status", "--json", str(run_dir))
    assert status.exit_code == 0 and json.loads(status.output)[0]["jobs"][0]["state"] == "completed"
    assert cli("eval", str(run_dir)).exit_code == 0 and (run_dir / "eval.json").is_file()
    assert cli("report", str(run_dir)).exit_code == 0 and (run_dir / "report.csv").is_file()
    assert cli("export", str(run_dir)).exit_code == 0 and (run_dir / "export").is_dir()
    # The API names the same folder as it is.
    run = cnnbench.train(*TINY, *FAST, run_dir=run_dir)
    assert run.path == run_dir and run.status == "completed"


def test_a_sweep_in_an_awkward_folder_continues(tmp_path, monkeypatch, cli) -> None:
    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "Sweep, 'ü'=1"
    swept = [o for o in TINY if not o.startswith("trainer.max_iters")] + ["trainer.max_iters=10"]
    sweep = cnnbench.sweep(*swept, *FAST, "seed=0,1", sweep_dir=sweep_dir)
    assert sorted(run.status for run in sweep) == ["completed", "completed"]
    result = cli("resume", str(sweep_dir))
    assert result.exit_code == 0, result.output
    assert "already completed, skipped" in result.output or "skipped" in result.output
