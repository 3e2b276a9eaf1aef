"""Bad values for every key of every composed config, through the real CLI and the Python API.

The keys come from composing the real conf/ (each experiment, each option of each config group), the
values from a family of bad ones (wrong type, negative, zero, huge, empty, NaN/inf, nonsense). Each
(key, value) is sent into a folder that holds a completed run: the answer must be a refusal in one
paragraph with exit 2 that names the key, or, for a value that is valid, the refusal of a folder holding
another run (or "already completed", when the value is that run's own). Never a traceback, never a
changed byte in the run folder, never a new folder under outputs/. The default suite tries a seeded
sample that covers every key; `-m slow` tries every pair, through the API too.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import cnnbench
from cnnbench.core.config import conf_dir
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.value_checks import leaves

# Hydra's command-line spelling of each bad value (it parses them: "nan" is a float, "''" the empty string).
BAD_VALUES = {
    "nonsense": "abc_xyz",
    "negative": "-1",
    "negative fraction": "-0.5",
    "zero": "0",
    "huge": "1e30",
    "huge whole": "1000000000000",
    "empty": "''",
    "empty list": "[]",
    "nan": "nan",
    "inf": "inf",
    "list": "[1,abc]",
    "boolean": "true",
}
# Folders an experiment composes with: a sweep experiment's swept keys are fixed (one job of it).
EXPERIMENTS = {
    None: [],
    "degradation_quick": ["model=plain", "depth=20"],
    "degradation": ["model=plain", "depth=20"],
    "degradation_seeds": ["model=plain", "depth=20", "seed=0"],
    "resnet110": [],
}
GROUPS = ("model", "data", "augment", "optimizer", "schedule", "numerics")
ANOTHER_RUN = "holds another run"
# Keys whose refusal names the key that reads them (depth is ${model.default_depth}).
NAMED_AS = {"model.default_depth": "depth="}
ALREADY_DONE = "is already completed; nothing to do"


def composed_keys() -> dict[str, list[str]]:
    """Every leaf key of every composed config -> the overrides that compose a config holding it."""
    found: dict[str, list[str]] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test_bad_values"):
        bases = [([f"experiment={e}"] if e else []) + extra for e, extra in EXPERIMENTS.items()]
        for group in GROUPS:
            options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
            bases += [[f"{group}={option}"] for option in options]
        for base in bases:
            cfg = compose(config_name="config", overrides=base)
            plain = OmegaConf.to_container(cfg, resolve=True)
            plain.pop("hydra", None)
            for key, _ in leaves(plain):
                found.setdefault(key, base)
    GlobalHydra.instance().clear()
    return found


KEYS = composed_keys()
PAIRS = [(key, name) for key in sorted(KEYS) for name in BAD_VALUES]


def sample() -> list[tuple[str, str]]:
    """Every key once, with a seeded choice of bad value: the default suite's share (`-m slow`: every
    pair)."""
    rng = random.Random(20261204)
    return [(key, rng.choice(sorted(BAD_VALUES))) for key in sorted(KEYS)]


def overrides_for(key: str, name: str) -> list[str]:
    base = [o for o in KEYS[key] if o.split("=")[0] != key]
    return [*TINY_SETTINGS, *base, f"{key}={BAD_VALUES[name]}"]


# The tiny run's settings without its data/model/depth (a composed key may come with another group option).
TINY_SETTINGS = [o for o in TINY if o.split("=")[0] not in ("data", "model", "depth")] + [
    "trainer.precision=fp32",
    "trainer.channels_last=false",
]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A completed tiny run in a folder whose name holds a space, '=' and ',' (as sweep jobs have)."""
    root = tmp_path_factory.mktemp("bad values")
    run_dir = root / "depth=8,model=plain run"
    run = cnnbench.train(*TINY, "trainer.precision=fp32", "trainer.channels_last=false", run_dir=run_dir)
    assert run.status == "completed"
    yield run_dir, tree_hashes(run_dir)


def check_answer(key: str, value: str, code: int, output: str) -> str:
    """Assert the answer is one of the allowed ones; return which: 'refused' or 'valid'."""
    assert "Traceback" not in output and "Error executing job" not in output, output
    text = output.strip()
    if code == 0:
        assert ALREADY_DONE in text, (key, value, text)
        return "valid"
    assert code == 2, (key, value, code, text)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text.endswith(errors[0].rstrip()), (key, value, text)  # one paragraph, last
    if ANOTHER_RUN in errors[0]:
        return "valid"
    # A value refusal names the key (or, for a group's `name`, the group: "Unknown model 'abc_xyz'").
    section, _, leaf = key.rpartition(".")
    named = NAMED_AS.get(key, key) in errors[0] or (leaf == "name" and section in errors[0])
    assert named, (key, value, errors[0])
    return "refused"


def try_pairs(cli, run_dir: Path, pairs: list[tuple[str, str]]) -> dict[str, int]:
    counts = {"refused": 0, "valid": 0}
    problems = []
    run_override = f"hydra.run.dir='{run_dir}'"
    for key, name in pairs:
        result = cli("train", *overrides_for(key, name), run_override)
        try:
            counts[check_answer(key, BAD_VALUES[name], result.exit_code, result.output)] += 1
        except AssertionError as problem:
            problems.append(str(problem).splitlines()[0])
    assert not problems, "\n".join(problems)
    return counts


def assert_untouched(run_dir: Path, hashes: dict[str, str], cwd: Path) -> None:
    assert tree_hashes(run_dir) == hashes, "the run folder changed"
    assert not (cwd / "outputs").exists(), "a refused command created outputs/"


def test_every_key_is_composed_and_has_a_rule() -> None:
    from cnnbench.rundir.values import CHECKED_BY_CONSTRUCTION, rules

    missing = [k for k in KEYS if k not in rules() and not k.startswith(CHECKED_BY_CONSTRUCTION)]
    assert not missing, f"keys without a rule in cnnbench/rundir/values.py: {missing}"
    assert {"trainer.max_iters", "schedule.milestones", "optimizer.momentum", "model.growth_rate"} <= set(
        KEYS
    )


def test_bad_values_sample_through_the_cli(cli, tmp_path, completed_run, capsys) -> None:
    run_dir, hashes = completed_run
    pairs = sample()
    counts = try_pairs(cli, run_dir, pairs)
    assert_untouched(run_dir, hashes, tmp_path)
    with capsys.disabled():
        print(f"\n{len(pairs)} (key, bad value) pairs over {len(KEYS)} keys: {counts}")
    assert counts["refused"] > counts["valid"]  # most of these values are bad for most keys


@pytest.mark.slow
def test_every_bad_value_through_the_cli(cli, tmp_path, completed_run, capsys) -> None:
    run_dir, hashes = completed_run
    counts = try_pairs(cli, run_dir, PAIRS)
    assert_untouched(run_dir, hashes, tmp_path)
    with capsys.disabled():
        print(f"\n{len(PAIRS)} (key, bad value) pairs over {len(KEYS)} keys: {counts}")


@pytest.mark.slow
def test_every_bad_value_through_the_api(tmp_path, monkeypatch, completed_run) -> None:
    run_dir, hashes = completed_run
    monkeypatch.chdir(tmp_path)
    for key, name in PAIRS:
        try:
            run = cnnbench.train(*overrides_for(key, name), run_dir=run_dir)
        except CnnbenchError as error:
            check_answer(key, BAD_VALUES[name], 2, f"error: {error}")
        else:
            assert run.status == "completed"
    assert_untouched(run_dir, hashes, tmp_path)


# The issue's own examples and the values users type from the paper's text, through a real process.
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("schedule.milestones=[32k,48k]", "schedule.milestones=[32000,48000]"),
        ("optimizer.momentum=-0.9", "optimizer.momentum must be a finite number >= 0"),
        ("seed=abc", "seed must be a whole number"),
        ("trainer.device=cuda:x", "trainer.device must be auto, cpu, cuda, cuda:N"),
    ],
)
def test_bad_values_in_a_real_process(completed_run, tmp_path, override: str, needle: str) -> None:
    run_dir, hashes = completed_run
    command = [sys.executable, "-m", "cnnbench", "train", *TINY_SETTINGS, "data=digits", "model=plain"]
    command += ["depth=8", override, f"hydra.run.dir='{run_dir}'"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and needle in done.stderr, done.stderr
    assert re.fullmatch(r"error: [^\n]+\n", done.stderr), done.stderr  # one paragraph, nothing else
    assert_untouched(run_dir, hashes, tmp_path)


def test_a_sweep_checks_every_job_before_its_folder_exists(cli, tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = cli("train", "-m", *TINY, "optimizer.momentum=0.9,-0.9", f"hydra.sweep.dir={sweep_dir}")
    assert result.exit_code == 2, result.output
    assert "optimizer.momentum=-0.9" in result.output and "Traceback" not in result.output
    assert not sweep_dir.exists()


def accepted_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose value check_config accepts (valid values for their key)."""
    from cnnbench.rundir.taskconfig import task_config
    from cnnbench.rundir.validate import check_config

    accepted = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test_bad_values"):
        for key, name in pairs:
            try:
                check_config(task_config(compose(config_name="config", overrides=overrides_for(key, name))))
            except CnnbenchError:
                continue
            accepted.append((key, name))
    GlobalHydra.instance().clear()
    return accepted


@pytest.mark.slow
def test_accepted_values_train(tmp_path, monkeypatch) -> None:
    """A value the checks accept is a valid run: two iterations end completed or diverged, never in an
    exception (CIFAR-10's keys are trained on a CIFAR-format folder the test writes)."""
    from data_fixtures import write_cifar10

    write_cifar10(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNBENCH_DATA", str(tmp_path / "data"))
    short = [
        "trainer.max_iters=2",
        "trainer.eval_every=2",
        "trainer.log_every=1",
        "trainer.eval_batch_size=50",
    ]
    # data.* keys are left out: a valid root or URL without the data behind it is refused when the data
    # is read (one paragraph, tested with the data sets), and SVHN's extra split has no local copy here.
    pairs = [(key, name) for key, name in accepted_pairs(PAIRS) if not key.startswith("data.")]
    for index, (key, name) in enumerate(pairs):
        overrides = [o for o in overrides_for(key, name) if not o.startswith("data.download")]
        run = cnnbench.train(*overrides, *short, run_dir=tmp_path / f"run{index}")
        assert run.status in ("completed", "diverged"), (key, name, run.status)


# Commands whose options are tried: every non-flag option, each with every bad value. train, config and
# bench take overrides (the keys above); data download would fetch; resume takes a folder only.
OPTION_COMMANDS = ("report", "models", "eval", "export", "analyze", "landscape", "status", "data verify")
BAD_OPTION_VALUES = ("abc_xyz", "-1", "0", "1e30", "", "nan", "inf", "1000000000000")


def command_options() -> list[tuple[str, str]]:
    """(command, option) for every option of OPTION_COMMANDS that takes a value, read from the CLI."""
    import typer.main

    from cnnbench.cli import app

    group = typer.main.get_command(app)
    found = []
    for name in OPTION_COMMANDS:
        command = group
        for word in name.split():
            command = command.commands[word]
        for param in command.params:
            opts = getattr(param, "opts", [])
            if opts and opts[0].startswith("--") and not getattr(param, "is_flag", False):
                found.append((name, opts[0]))
    return found


OPTIONS = command_options()


def try_options(cli, source: Path, tmp_path: Path, values: dict[tuple[str, str], list[str]]) -> dict:
    import shutil

    counts = {"refused": 0, "valid": 0}
    problems = []
    for (command, option), bad in values.items():
        for value in bad:
            run_dir = tmp_path / "run copy"
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(source, run_dir)
            before = tree_hashes(run_dir)
            target = [] if command in ("models", "data verify") else [str(run_dir)]
            target += ["digits"] if command == "data verify" else []
            extra = ["--resolution", "5"] if command == "landscape" and option != "--resolution" else []
            result = cli(*command.split(), *target, *extra, option, value)
            where = f"`cnnbench {command} {option} {value!r}`"
            output = result.output.strip()
            try:
                assert "Traceback" not in output, output
                assert result.exit_code in (0, 2), (result.exit_code, output)
                after = tree_hashes(run_dir)
                # Files that were there stay byte-identical; a valid command may add its own.
                assert {k: after.get(k) for k in before} == before, "changed files in the run folder"
                if result.exit_code:
                    assert len([ln for ln in output.splitlines() if ln.startswith("error:")]) == 1, output
                    assert after == before, "a refused command wrote into the run folder"
                counts["valid" if result.exit_code == 0 else "refused"] += 1
            except AssertionError as problem:
                reason = str(problem).splitlines()[-1][:200]
                problems.append(f"{where} (exit {result.exit_code}): {reason}\n{output[-800:]}")
    assert not problems, "\n".join(problems)
    return counts


def test_bad_option_values_sample(cli, tmp_path, completed_run, capsys) -> None:
    rng = random.Random(20261205)
    values = {pair: [rng.choice(BAD_OPTION_VALUES)] for pair in OPTIONS}
    counts = try_options(cli, completed_run[0], tmp_path, values)
    with capsys.disabled():
        print(f"\n{len(OPTIONS)} command options, one bad value each: {counts}")


@pytest.mark.slow
def test_every_bad_option_value(cli, tmp_path, completed_run, capsys) -> None:
    values = {pair: list(BAD_OPTION_VALUES) for pair in OPTIONS}
    counts = try_options(cli, completed_run[0], tmp_path, values)
    with capsys.disabled():
        print(f"\n{len(OPTIONS)} command options x {len(BAD_OPTION_VALUES)} bad values: {counts}")
