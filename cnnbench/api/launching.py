"""``train`` and ``sweep`` from Python: the bodies of `cnnbench train [-m]` and `cnnbench resume`, with
the caller's working directory, logging, environment, RNGs and Hydra state kept, and refusals raised as
``CnnbenchError`` with the CLI's message."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.api.handles import Run, Sweep
from cnnbench.core.overrides import hydra_value
from cnnbench.errors import CnnbenchError, collected_errors
from cnnbench.rundir.files import MULTIRUN_RECORD, read_metrics
from cnnbench.rundir.find import is_sweep

if TYPE_CHECKING:
    pass


def _overrides(overrides: tuple[str, ...], options: dict[str, Any]) -> list[str]:
    """Positional overrides as typed, then keyword ones: ``depth=56``, ``trainer__max_iters=300``."""
    given = list(overrides)
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        given.append(f"{key.replace('__', '.')}={text}")
    bad = [o for o in given if not isinstance(o, str) or o.startswith("-")]
    if bad:
        raise CnnbenchError(
            f"{', '.join(map(str, bad))}: cnnbench.train/sweep take Hydra overrides (key=value strings, e.g. "
            f'"depth=56"), not command-line flags; use cnnbench.sweep for a multirun.'
        )
    return given


@contextmanager
def rng_kept() -> Iterator[None]:
    """The caller's global RNGs (python, numpy, torch) as they were, afterwards: training and the
    diagnostics seed them with the run's seed, a notebook's own random draws should not notice."""
    import random

    import numpy
    import torch

    python_state, numpy_state = random.getstate(), numpy.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            numpy.random.set_state(numpy_state)


@contextmanager
def _kernel_kept() -> Iterator[None]:
    """The caller's working directory, logging set-up, RNGs and Hydra state as they were, afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    cwd = os.getcwd()
    root = logging.getLogger()
    saved_root = (root.level, root.handlers[:])
    saved = {
        name: (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        with rng_kept():
            yield
    finally:
        GlobalHydra.instance().clear()
        os.chdir(cwd)
        for handler in root.handlers[:]:
            if handler not in saved_root[1]:
                handler.close()  # train.log: Hydra's file handler for the run that ended
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and name in saved:
                lg.level, lg.handlers[:], lg.propagate, lg.disabled = saved[name]


def _launch(body: Callable[[], int]) -> tuple[int, dict[str, Path]]:
    """Run a command's body (``commands.train.train``, ``commands.resume.resume``) as the CLI does; a
    refusal raises ``CnnbenchError`` with the CLI's message."""
    from cnnbench.commands import app

    app.last_launch.clear()
    with _kernel_kept(), collected_errors() as errors:
        try:
            code = body()
        except CnnbenchError as exc:
            errors.append(str(exc))
            code = exc.exit_code
        except SystemExit as stop:  # a run stopped by a signal (Ctrl-C in a cell): marked interrupted
            code = stop.code if isinstance(stop.code, int) else 1
    where = dict(app.last_launch)
    if errors and not _stopped_run(code, where):
        raise CnnbenchError("\n".join(errors), exit_code=code or 2)
    return code, where


def _stopped_run(code: int, where: dict[str, Path]) -> bool:
    """A run a signal stopped (exit 128 + n) and marked interrupted: returned, not raised. A refusal of a
    folder whose metrics say interrupted (say, another process holds it) is still raised."""
    run_dir = where.get("run_dir")
    stopped = code > 128 and run_dir is not None
    return stopped and (read_metrics(run_dir) or {}).get("status") == "interrupted"


def train(*overrides: str, run_dir: str | Path | None = None, **options: Any) -> Run:
    """Train one run, exactly as ``cnnbench train OVERRIDES...`` does, and return it when it ends.

    ``overrides`` are Hydra overrides as on the command line (``"model=resnet"``, ``"depth=20"``);
    keyword options are overrides too, with ``__`` for the dots (``trainer__max_iters=300``).
    ``run_dir``: the run folder (default: ``outputs/<model><depth>/<stamp>``, as the CLI). Calling
    ``train`` again with the same ``run_dir`` continues an interrupted run or returns the completed one
    (``trainer.resume=auto``).

    Returns a ``Run`` whose ``status`` says how it ended: ``completed``, ``diverged``, or ``interrupted``
    (Ctrl-C / the notebook's interrupt: the checkpoint is kept, the same call continues it).
    Raises ``CnnbenchError`` (the CLI's one-paragraph message) for bad overrides or a refused folder;
    nothing is written then.
    """
    from cnnbench.commands.train import train as train_body

    args = _overrides(overrides, options)
    if run_dir is not None:
        args.append(f"hydra.run.dir={hydra_value(str(Path(run_dir)))}")
    _, where = _launch(lambda: train_body(args))
    if "run_dir" not in where:
        raise CnnbenchError("The run did not start (no run folder was chosen); see the log above.")
    return Run(where["run_dir"])


def sweep(*overrides: str, sweep_dir: str | Path | None = None, **options: Any) -> Sweep:
    """A Hydra multirun, exactly as ``cnnbench train -m OVERRIDES...`` (any launcher, e.g.
    ``"hydra/launcher=joblib"``): every job's config is checked before any starts. Returns the ``Sweep``
    when all jobs have ended; ``sweep_dir`` as ``hydra.sweep.dir`` (default ``outputs/multirun/<stamp>``).

    The same call with the same ``sweep_dir`` again (a notebook cell run twice, or after the kernel's
    stop button) continues the sweep as ``cnnbench resume SWEEP_DIR`` does: finished jobs are returned
    as they are, interrupted ones continue, unstarted ones start. Other overrides into that folder are
    refused (``CnnbenchError``), nothing changed."""
    from cnnbench.commands.train import train as train_body

    args = _overrides(overrides, options)
    if sweep_dir is not None and is_sweep(Path(sweep_dir)):
        return _continue_sweep(Path(sweep_dir), args)
    if sweep_dir is not None:
        args.append(f"hydra.sweep.dir={hydra_value(str(Path(sweep_dir)))}")
    _, where = _launch(lambda: train_body(args, multirun=True))
    if "sweep_dir" not in where:
        raise CnnbenchError("The sweep did not start (no sweep folder was chosen); see the log above.")
    return Sweep(where["sweep_dir"])


def _continue_sweep(sweep_dir: Path, args: list[str]) -> Sweep:
    """``sweep_dir`` holds a sweep: continue it if ``args`` are its own task overrides, else refuse."""
    from omegaconf import OmegaConf

    from cnnbench.commands.train import resume

    recorded = OmegaConf.to_container(OmegaConf.load(sweep_dir / MULTIRUN_RECORD).hydra.overrides.task)
    given = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    if sorted(given) != sorted(recorded):
        raise CnnbenchError(
            f"{sweep_dir} holds a sweep of other overrides ({' '.join(recorded)}), not of these "
            f"({' '.join(given)}); cnnbench never overwrites results. Give the same overrides to continue "
            f"it, or another sweep_dir for a new sweep. Nothing was changed."
        )
    _launch(lambda: resume(sweep_dir))
    return Sweep(sweep_dir)


# What report, analyze and landscape take: runs, sweeps or folders, alone or several.
