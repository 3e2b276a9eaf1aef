"""A new user's first hour, scripted: one help and error convention for every command, nothing written
on refusal, `config -m` for each experiment, records and hints that can be followed as written."""

from __future__ import annotations

import itertools
import json
import logging
import shlex
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY
from omegaconf import OmegaConf

import cnnbench
from cnnbench.core.overrides import config_groups

# Every command, with arguments that get it past its required ones (a path that does not exist: commands
# that take folders must refuse it cleanly).
COMMANDS = {
    "train": [],
    "config": [],
    "resume": ["nowhere"],
    "report": ["nowhere"],
    "models": [],
    "bench": [],
    "eval": ["nowhere"],
    "export": ["nowhere"],
    "analyze": ["nowhere"],
    "landscape": ["nowhere"],
    "status": ["nowhere"],
    "data download": ["cifar10"],
    "data verify": ["cifar10"],
    "data list": [],
}
# Commands that take Hydra overrides: a typo in a key or a group's option names the closest choice.
OVERRIDE_COMMANDS = ("train", "config", "bench")
INTERNALS = (
    "Traceback",
    "Error executing job",
    "Config search path",
    "provider=",
    "file://",
    "site-packages",
)


def assert_clean_refusal(result, *expected: str) -> None:
    """One paragraph starting with `error:`, a non-zero exit, nothing of Hydra's or Python's internals."""
    assert result.exit_code != 0, result.output
    assert "error:" in result.output, result.output
    for text in INTERNALS:
        assert text not in result.output, (text, result.output)
    for text in expected:
        assert text in result.output, (text, result.output)


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_flags_show_the_commands_own_help(cli, command, flag):
    result = cli(*command.split(), flag)
    assert result.exit_code == 0, result.output
    assert f"Usage: cnnbench {command}" in result.output
    assert "powered by Hydra" not in result.output  # Hydra's help stays under --hydra-help


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_option_is_refused_with_the_commands_help(cli, command):
    result = cli(*command.split(), *COMMANDS[command], "--bogus")
    assert result.exit_code == 2
    assert_clean_refusal(result, "--bogus", f"cnnbench {command} -h")


@pytest.mark.parametrize("command", OVERRIDE_COMMANDS)
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("depht=20", ["'depht'", "Did you mean depth?"]),
        ("max_iters=5", ["Did you mean trainer.max_iters?"]),
        ("model=resnte", ["no model 'resnte'", "Did you mean resnet?", "plain", "wide_resnet"]),
        ("data=cifar11", ["no data 'cifar11'", "cifar10", "digits"]),
        ("'schedule.milestones=[1,2'", ["cannot be read", "key=value"]),
    ],
)
def test_a_typo_in_an_override_names_the_closest_choice(cli, command, override, expected):
    result = cli(command, *shlex.split(override))
    assert result.exit_code == 2
    assert_clean_refusal(result, *expected)
    assert "+depht" not in result.output  # Hydra's advice to add the mistyped key is not repeated


BAD_VALUES = [
    (["models", "--model", "resnte"], ["Did you mean resnet?"]),
    (["data", "download", "cifar11"], ["Did you mean cifar10"]),
    (["trian"], ["No such command 'trian'", "Did you mean 'train'?"]),
    (["resume", "nowhere"], ["nowhere does not exist"]),
    (["report", "nowhere"], ["nowhere"]),
    (["status", "nowhere"], ["nowhere does not exist"]),
    (["models", "--depths", "20,x"], ["comma-separated integers"]),
    (["train", "depth=21"], ["depth=21", "6n+2", "Set e.g. depth=20"]),
    (["train", "depth=abc"], ["depth='abc' must be a whole number"]),
    (["train", "--foo"], ["No such option for `cnnbench train`: --foo"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_one_clean_paragraph(cli, args, expected):
    assert_clean_refusal(cli(*args), *expected)


def test_depth_suggestions_follow_the_chosen_block(cli):
    """depth=21 with basic blocks must not suggest 29 (valid only for bottleneck blocks)."""
    basic = cli("train", "data=digits", "depth=21")
    assert "14, 20, 26, 32" in basic.output and "29" not in basic.output
    bottleneck = cli("train", "data=digits", "depth=21", "model.block=bottleneck")
    assert "9n+2" in bottleneck.output and "20, 29" in bottleneck.output


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"cnnbench {cnnbench.__version__} (torch ")


def test_bare_command_prints_help_and_succeeds(cli):
    result = cli()
    assert result.exit_code == 0
    assert "Usage: cnnbench" in result.output and "train" in result.output


def test_train_help_lists_every_group_and_its_choices(cli):
    output = " ".join(cli("train", "-h").output.split())  # rich wraps lines
    for group, options in config_groups().items():
        assert f"{group}:" in output
        for option in options:
            assert option in output, (group, option)


# --- nothing written on refusal ------------------------------------------------------------------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "args",
    [
        ["train", "data=digits", "depth=21"],
        ["train", "data=digits", "depth=abc"],
        ["train", "data=digits", "data.val_size=5000"],  # refused by the data loader, after Hydra's folder
        ["train", "data=digits", "trainer.precision=fp16", "trainer.device=cpu"],
        ["train", "data=digits", "depht=20"],
        ["train", "-m", "data=digits", "depth=8,21"],  # job #1 cannot train: no job starts
        ["train", "-m", "data=digits", "model=plain,resnte"],
        ["train", "-m", "data=digits", "depht=8,20"],
    ],
    ids=" ".join,
)
def test_a_refused_config_leaves_the_outputs_folder_unchanged(cli, tmp_path, args):
    earlier = tmp_path / "outputs" / "resnet20" / "earlier-run"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}")
    before = _tree(tmp_path)
    result = cli(*args)
    assert_clean_refusal(result)
    assert _tree(tmp_path) == before


def test_a_refused_config_leaves_no_outputs_folder_at_all(cli, tmp_path):
    result = cli("train", "data=digits", "data.val_size=5000")
    assert_clean_refusal(result, "data.val_size=5000")
    assert not (tmp_path / "outputs").exists()


def test_fp16_on_a_cpu_can_be_forced():
    from cnnbench.core.overrides import compose
    from cnnbench.errors import CnnbenchError
    from cnnbench.rundir.validate import check_config

    cfg = compose(["data=digits", "trainer.precision=fp16", "trainer.device=cpu"])
    with pytest.raises(CnnbenchError, match="trainer.precision=bf16"):
        check_config(cfg)
    check_config(
        compose(
            [
                "data=digits",
                "trainer.precision=fp16",
                "trainer.device=cpu",
                "trainer.allow_slow_precision=true",
            ]
        )
    )


# --- config: -m, --cfg, -p ------------------------------------------------------------------------------


def _experiments() -> list:
    # degradation_seeds is degradation_quick's code path with 24 jobs (~10 s): under -m slow.
    return [
        pytest.param(name, marks=pytest.mark.slow) if name == "degradation_seeds" else name
        for name in config_groups()["experiment"]
    ]


@pytest.mark.parametrize("experiment", _experiments())
def test_config_m_lists_every_job_of_each_experiment(cli, tmp_path, experiment):
    from cnnbench.core.overrides import experiment_sweep

    sweep = experiment_sweep([f"experiment={experiment}"])
    values = [v.split(",") for v in sweep.values()]
    result = cli("config", "-m", f"experiment={experiment}")
    assert result.exit_code == 0, result.output
    jobs = list(itertools.product(*values))
    assert f"{len(jobs)} job{'s' if len(jobs) > 1 else ''}" in result.output
    for job in jobs:
        overrides = " ".join(f"{k}={v}" for k, v in zip(sweep, job, strict=True))
        assert overrides in result.output, overrides
    assert not (tmp_path / "outputs").exists()  # listed, not launched


def test_config_m_names_the_job_folders_by_what_varies(cli):
    result = cli("config", "-m", "data=digits", "model=plain,resnet", "depth=8", "seed=0,1")
    assert result.exit_code == 0, result.output
    for folder in ("model=plain,seed=0", "model=plain,seed=1", "model=resnet,seed=0", "model=resnet,seed=1"):
        assert folder in result.output
    # Constants stay out of the folder names (the overrides column separates with spaces, names with commas).
    assert "depth=8," not in result.output and "data=digits," not in result.output


def test_config_m_refuses_a_sweep_with_a_job_that_cannot_train(cli):
    result = cli("config", "-m", "data=digits", "depth=8,21")
    assert_clean_refusal(result, "job #1", "depth=21", "No job was started")


def test_config_of_a_sweep_experiment_without_m_says_it_is_a_sweep(cli):
    result = cli("config", "experiment=degradation_quick")
    assert result.exit_code == 0
    assert (
        "is a sweep" in result.output and "cnnbench config -m experiment=degradation_quick" in result.output
    )


def test_config_passes_hydras_cfg_and_package_flags(cli):
    hydra = cli("config", "--cfg", "hydra")
    assert hydra.exit_code == 0 and "run:" in hydra.output and "sweep:" in hydra.output
    assert "max_iters" not in hydra.output  # the Hydra config, not the job's
    trainer = cli("config", "-p", "trainer")
    assert trainer.exit_code == 0
    assert "# @package trainer" in trainer.output and "max_iters: 64000" in trainer.output
    assert "model:" not in trainer.output


# --- records and hints that can be followed as written -------------------------------------------------


def test_env_json_records_a_command_that_trains_the_run_again(cli, tmp_path):
    assert cli("train", *TINY).exit_code == 0
    (first,) = (tmp_path / "outputs").glob("*/*/env.json")
    env = json.loads(first.read_text())
    assert env["launched_with"] == ["cnnbench", "train", *TINY]
    command = shlex.split(env["command"])
    assert command[:2] == ["cnnbench", "train"]
    result = cli(*command[1:])
    assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))
    assert len(runs) == 2
    assert OmegaConf.load(runs[0]) == OmegaConf.load(runs[1])


def test_env_json_of_a_sweep_job_records_the_jobs_own_values(cli, tmp_path):
    assert cli("train", "-m", *TINY, "seed=0,1").exit_code == 0
    commands = sorted(
        json.loads(p.read_text())["command"] for p in tmp_path.glob("outputs/multirun/*/*/env.json")
    )
    assert len(commands) == 2
    assert [("seed=0" in c, "seed=1" in c) for c in commands] == [(True, False), (False, True)]
    assert all(c.startswith("cnnbench train ") and "-m" not in shlex.split(c) for c in commands)


def _interrupt_message(caplog, sweep_dir: Path | None) -> str:
    from cnnbench.engine.trainer import Trainer

    trainer = SimpleNamespace(
        sweep_dir=sweep_dir,
        run_dir=Path("outputs/multirun/stamp/depth=20,model=plain"),
        state=SimpleNamespace(iteration=7),
        cfg=OmegaConf.create({"trainer": {"max_iters": 100}}),
    )
    with caplog.at_level(logging.ERROR, logger="cnnbench"):
        code = Trainer._interrupted_message(trainer, signal.SIGINT)
    assert code == 128 + signal.SIGINT
    return caplog.text


def test_interrupt_in_a_sweep_points_to_resuming_the_sweep(caplog):
    text = _interrupt_message(caplog, Path("outputs/multirun/stamp"))
    assert "the sweep" in text and "cnnbench resume outputs/multirun/stamp\n" in text
    assert "this job alone with:\n  cnnbench resume outputs/multirun/stamp/depth=20,model=plain" in text


def test_interrupt_of_a_single_run_points_to_its_folder(caplog):
    text = _interrupt_message(caplog, None)
    assert "Continue with:\n  cnnbench resume outputs/multirun/stamp/depth=20,model=plain" in text
    assert "sweep" not in text


# --- models ------------------------------------------------------------------------------------------


def test_models_says_which_depths_it_skipped(cli):
    result = cli("models", "--depths", "8,10,14,21", "--model", "resnet")
    assert result.exit_code == 0
    depths = [
        line.split("│")[2].strip() for line in result.output.splitlines() if line.startswith("│ resnet")
    ]
    assert depths == ["8", "14"]
    assert "Skipped, not valid depths of the family (rules above): resnet 10, 21." in " ".join(
        result.output.split()
    )


def test_a_refusal_never_removes_a_folder_that_existed_before(cli, tmp_path):
    """Only the folders the refused call itself created go, even after an earlier run in this process."""
    assert cli("train", *TINY).exit_code == 0  # a first run creates its own folder
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("my notes")
    result = cli("train", "data=digits", "data.val_size=5000", f"hydra.run.dir={kept}")
    assert_clean_refusal(result, "data.val_size=5000")
    assert (kept / "notes.txt").read_text() == "my notes"
