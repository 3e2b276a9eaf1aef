"""`cnnbench train [-m]`, `cnnbench config [-m]` and `cnnbench resume`: the bodies both faces call (the
CLI, and ``cnnbench.train`` / ``cnnbench.sweep``), so a sweep is checked, launched, named and continued
the same way from either."""

from __future__ import annotations

import sys
from pathlib import Path

from cnnbench.commands.launch import check_flags, distributed_setup, launch, list_sweep_jobs
from cnnbench.core.overrides import split_flags
from cnnbench.errors import CnnbenchError
from cnnbench.rundir.find import is_sweep

# Hydra's flags that print one configuration instead of running.
ONE_CONFIG_FLAGS = {"--cfg", "-c", "--info", "-i"}


def custom_sweeper(args: list[str]) -> bool:
    """A sweeper of the user's (Optuna, Ax, ...) proposes its jobs as it goes: they cannot be listed
    before the sweep starts, and each is checked as it starts instead."""
    return any(a.startswith("hydra/sweeper=") for a in args)


def train(args: list[str], multirun: bool = False) -> int:
    """Train one run, or with ``multirun`` a Hydra sweep whose every job is checked before the sweep folder
    is made or any job starts; under torchrun, one run over the process group. Returns the exit code."""
    args = list(args)
    check_flags("train", args)
    if multirun and ONE_CONFIG_FLAGS & set(args):
        raise CnnbenchError("--cfg/--info print one configuration; use them without -m/--multirun.")
    if multirun and not custom_sweeper(args):
        code = list_sweep_jobs(args, quiet=True, command="train")
        if code:
            return code
    ctx = distributed_setup(multirun)
    if ctx.rank > 0:
        # Rank 0 writes .hydra/ and train.log; the other ranks only train.
        args += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    return launch((["--multirun"] if multirun else []) + args, "train")


def config(args: list[str], multirun: bool = False) -> int:
    """Print the composed config for ``args`` (Hydra's --cfg job unless another view is asked), or with
    ``multirun`` the jobs of the sweep (an experiment that is a sweep gets a note on stderr)."""
    from cnnbench.core.overrides import experiment_sweep

    args = list(args)
    check_flags("config", args)
    given, flags = split_flags(args)
    if multirun:
        if (ONE_CONFIG_FLAGS | {"-p", "--package"}) & set(flags):
            raise CnnbenchError(
                "config -m lists a sweep's jobs; --cfg/-p/--info show one job's config. Drop -m and give the "
                "job's values, e.g. `cnnbench config experiment=degradation_quick model=plain depth=20`."
            )
        return list_sweep_jobs(args)
    if not (ONE_CONFIG_FLAGS | {"--hydra-help"}) & set(flags):
        args += ["--cfg", "job"]
    code = launch(args, "config")
    sweep = experiment_sweep(given)
    unset = [key for key in sweep if not any(o.split("=", 1)[0] == key for o in given)]
    if code == 0 and unset:
        experiment = next(o for o in given if o.startswith("experiment="))
        print(
            f"note: {experiment} is a sweep ({'; '.join(f'{k}: {v}' for k, v in sweep.items())}); above is "
            f"its config before the swept values. List its jobs with `cnnbench config -m {experiment}`.",
            file=sys.stderr,
        )
    return code


def resume(directory: Path) -> int:
    """`cnnbench resume DIR` (and ``cnnbench.sweep`` into a sweep's folder): a sweep folder continues
    every unfinished job through Hydra, a run folder continues in place. Returns the exit code."""
    from cnnbench.commands.resume import resume_run, resume_sweep

    if not directory.exists():
        raise CnnbenchError(
            f"{directory} does not exist. Give `cnnbench resume` a run folder "
            f"(outputs/<model><depth>/<stamp>) or a sweep folder (outputs/multirun/<stamp>); "
            f"`cnnbench status outputs/...` lists them."
        )
    if is_sweep(directory):
        return launch(resume_sweep(directory))
    return resume_run(directory)
