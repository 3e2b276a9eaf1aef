"""`cnnbench config -m`: the jobs a sweep would launch, listed instead of run.

A Hydra launcher (selected with ``hydra/launcher=cnnbench_list``) that composes each job's config the way
a real launcher does, so the listing shows exactly the overrides and the job folders (TensorBoard's run
names) that `cnnbench train -m` with the same arguments would use, and trains nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict


class ListLauncher(Launcher):
    """Compose every job of the sweep, check its config (cnnbench.rundir.validate) and list it; run none.

    ``quiet`` (`cnnbench train -m` checks a sweep this way before launching it): no table, only the
    refusal of the first job whose config cannot train.
    """

    def __init__(self, quiet: bool = False, **_: Any) -> None:
        self.quiet = quiet
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rich.console import Console
        from rich.table import Table

        from cnnbench.errors import CnnbenchError

        assert self.config is not None and self.hydra_context is not None
        count = len(job_overrides)
        table = Table(title=f"{count} job{'s' if count != 1 else ''}", title_justify="left")
        for column in ("#", "job folder (TensorBoard run)", "overrides"):
            table.add_column(column)
        returns, problems = [], []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job):
                job.hydra.job.id = str(index)
                job.hydra.job.num = index
            HydraConfig.instance().set_config(job)
            folder = str(OmegaConf.select(job, "hydra.sweep.subdir"))
            table.add_row(str(index), folder, " ".join(overrides))
            problem = _config_problem(job)
            if problem:
                problems.append(f"job #{index} ({' '.join(overrides)}): {problem}")
            returns.append(
                JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
            )
        if not self.quiet:
            Console(width=None if sys.stdout.isatty() else 160).print(table)
        if problems:
            more = f" ({len(problems) - 1} more jobs cannot train either)" if len(problems) > 1 else ""
            raise CnnbenchError(f"The sweep cannot train {problems[0]}{more} No job was started.")
        return returns


def _config_problem(job: DictConfig) -> str | None:
    """What cnnbench.rundir.validate refuses in this job's config (the checks `cnnbench train` runs first)."""
    from cnnbench.errors import CnnbenchError
    from cnnbench.rundir.taskconfig import task_config
    from cnnbench.rundir.validate import check_config

    try:
        check_config(task_config(job))
    except CnnbenchError as error:
        return str(error)
    except Exception as exc:  # whatever the checks trip over refuses the sweep, before any folder exists
        return f"its config cannot be checked ({type(exc).__name__}: {exc}); check its values."
    return None
