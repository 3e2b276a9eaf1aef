"""Launching the Hydra app as `cnnbench train` and `cnnbench config` do: the command line handed to
Hydra, its refusals as one message, a sweep's jobs checked (or listed) before any starts, and torchrun's
process group. The CLI and the Python API both launch through here."""

from __future__ import annotations

import json
import os
import sys

from cnnbench.core.overrides import HYDRA_FLAGS, unknown_flags
from cnnbench.errors import CnnbenchError, print_error


def launch(args: list[str], command: str = "train") -> int:
    """Run the Hydra app with ``args`` as its command line; user errors become messages, not tracebacks."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cnnbench.commands.sweep_report import report_unended_sweep
    from cnnbench.core.overrides import clean_hydra_message, explain_override_problem
    from cnnbench.errors import CnnbenchError
    from cnnbench.rundir.files import LAUNCH_ENV

    saved_argv, saved_env = (
        sys.argv,
        {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", LAUNCH_ENV)},
    )
    # Hydra re-raises instead of printing its own trimmed traceback; we print the message alone.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # The command as typed, for env.json (Hydra reads sys.argv, which holds only its own arguments).
    os.environ[LAUNCH_ENV] = json.dumps(["cnnbench", command, *args])
    sys.argv = ["cnnbench", *args]
    try:
        from cnnbench.commands.app import hydra_app

        hydra_app()
    except CnnbenchError as exc:
        print_error(str(exc))
        return exc.exit_code
    except (HydraException, OmegaConfBaseException) as exc:
        problem = explain_override_problem(args, command)
        print_error(
            problem
            or f"{clean_hydra_message(exc)} `cnnbench {command} -h` lists the config groups and their "
            f"choices; `cnnbench config` prints every key."
        )
        return 2
    finally:
        # A sweep stopped by a failed job or a signal never reaches Hydra's on_multirun_end: its report here.
        report_unended_sweep()
        # An in-process launch (the Python API, a test) leaves the caller's argv and environment as they were.
        sys.argv = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return 0


def check_flags(command: str, args: list[str], hydra: bool = True) -> None:
    """An option neither the command nor Hydra takes is refused (Hydra would read it as an override)."""
    bad = unknown_flags(args, HYDRA_FLAGS if hydra else set())
    if bad:
        hint = " (Hydra's own flags pass through: --cfg job, --info, --hydra-help, ...)" if hydra else ""
        raise CnnbenchError(
            f"No such option for `cnnbench {command}`: {', '.join(bad)}{hint}. See `cnnbench {command} -h` "
            f"for its options; overrides are written without dashes (depth=56)."
        )


def distributed_setup(multirun: bool):
    """Under torchrun: join the process group and agree on rank 0's run folder stamp."""
    from cnnbench.core.distributed import context, init, share_run_stamp

    ctx = context()
    if ctx.enabled:
        if multirun:
            raise CnnbenchError(
                "torchrun trains one run over several processes; -m/--multirun is not supported there."
            )
        init(ctx)
        share_run_stamp(ctx)
    return ctx


def list_sweep_jobs(args: list[str], quiet: bool = False, command: str = "config") -> int:
    """Compose the sweep like `cnnbench train -m` does, with a launcher that checks and lists the jobs
    instead of running them (``quiet``: checks only)."""
    import shutil
    import tempfile

    from hydra.core.plugins import Plugins

    from hydra_plugins.cnnbench_list_launcher.list_launcher import ListLauncher

    # Hydra's plugin discovery cannot walk an editable install's namespace packages: register it by hand.
    Plugins.instance().register(ListLauncher)
    scratch = tempfile.mkdtemp(prefix="cnnbench-config-m-")  # Hydra writes multirun.yaml to the sweep dir
    try:
        # The launcher's own settings (n_jobs, timeout_min, ...) and the sweep's report do not change the
        # jobs: left out (no report of this throw-away sweep).
        kept = [
            a
            for a in args
            if not a.startswith(
                ("hydra/launcher=", "hydra.launcher.", "hydra.sweep.dir=", "hydra.callbacks.report.")
            )
        ]
        return launch(
            [
                "--multirun",
                *kept,
                "hydra/launcher=cnnbench_list",
                f"hydra.launcher.quiet={str(quiet).lower()}",
                f"hydra.sweep.dir={scratch}",
                "hydra.callbacks.report.enabled=false",
                "hydra/hydra_logging=none",
                "hydra/job_logging=none",
            ],
            command,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
