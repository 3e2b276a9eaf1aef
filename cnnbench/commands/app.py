"""The Hydra application behind `cnnbench train` (and `python -m cnnbench train`, torchrun).

A real ``@hydra.main`` app, so Hydra's multirun, launchers, sweepers, output folders and flags such as
``--cfg job`` work as Hydra users expect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from cnnbench.core.config import conf_dir
from cnnbench.errors import CnnbenchError, print_error
from cnnbench.launchers.resolvers import register_resolvers as register_gpu_resolvers
from cnnbench.rundir.files import holds_run
from cnnbench.rundir.names import register as register_run_names
from cnnbench.rundir.taskconfig import task_config

# ${cnnbench.run_name:} names sweep job folders (conf/config.yaml); jobs in other processes import this too.
register_run_names()
# ${cnnbench.sweep_jobs:K}: n_jobs of hydra/launcher=gpus, k jobs per GPU (conf/hydra/launcher/gpus.yaml).
register_gpu_resolvers()

# Set (through hydra.job.env_set, so every launcher passes it on) by `cnnbench resume SWEEP_DIR`.
RESUME_ENV = "CNNBENCH_RESUME"

# Whether this call of a single run creates its run folder, and the deepest folder above it that already
# existed: a run refused before it wrote anything of value leaves none of the new folders behind. (The
# callback sees the folder name resolved a moment before Hydra resolves it again: a ${now:...} stamp
# differs by microseconds, its parents do not.)
_new_run_folder: dict[str, Path] = {}
# The folder the latest launch in this process trains into (run_dir) or sweeps into (sweep_dir): the
# Python API returns it as a Run or Sweep, also when the run was refused or interrupted.
last_launch: dict[str, Path] = {}
# hydra.run.dir as configured, before this call's run folder replaced it (where the outputs root lies).
_run_dir_pattern: dict[str, str] = {}


def _refuse(error: CnnbenchError) -> NoReturn:
    # Hydra turns an Exception raised by a callback into a warning and carries on (writing .hydra/ and
    # multirun.yaml over the old ones); SystemExit is no Exception, so it stops Hydra before any write.
    print_error(str(error))
    raise SystemExit(error.exit_code)


class RefuseOverwrite(Callback):
    """Refuse before Hydra writes anything into a folder that already holds results."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _refusals():
            self._check_run(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _refusals():
            self._check_sweep(config)

    @staticmethod
    def _check_run(config: DictConfig) -> None:
        _new_run_folder.clear()  # an earlier run of this process says nothing about this one
        _run_dir_pattern.clear()
        last_launch.clear()
        last_launch["run_dir"] = Path(str(config.hydra.run.dir))
        if int(os.environ.get("RANK", "0")) > 0:
            return  # torchrun: rank 0 checks (and the other ranks find its files there)
        _refuse_unswept_experiment(config)
        from cnnbench.rundir.continuation import decide
        from cnnbench.rundir.validate import check_config

        task = task_config(config)
        check_config(task)  # a refused config leaves no run folder behind
        # trainer.resume: continue the same run, return for a completed one, refuse another run.
        run_dir = Path(str(config.hydra.run.dir))
        decide(task, run_dir)
        if not run_dir.exists():
            _new_run_folder["existing_parent"] = next(p for p in run_dir.parents if p.exists()).resolve()
        if not _named_by_user(config, "hydra.run.dir") and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # A stamped folder of its own, created exclusively (two runs started with the same stamp get
            # two folders); Hydra then uses exactly this folder.
            claimed = _claim_folder(run_dir)
            from omegaconf import OmegaConf

            _run_dir_pattern["dir"] = str(OmegaConf.to_container(config.hydra.run)["dir"])
            with read_write(config.hydra.run):
                config.hydra.run.dir = str(claimed)
            last_launch["run_dir"] = claimed

    @staticmethod
    def _check_sweep(config: DictConfig) -> None:
        last_launch.clear()
        last_launch["sweep_dir"] = Path(str(config.hydra.sweep.dir))
        if config.hydra.job.env_set.get(RESUME_ENV):
            return
        _refuse_unnamed_sweeps(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not _named_by_user(config, "hydra.sweep.dir"):
            sweep_dir = _claim_sweep_folder(config, sweep_dir)
            last_launch["sweep_dir"] = sweep_dir
        if sweep_dir.is_dir() and any(holds_run(p) for p in sweep_dir.iterdir() if p.is_dir()):
            raise CnnbenchError(
                f"{sweep_dir} already holds a sweep's runs; cnnbench never overwrites results. Continue "
                f"it with `cnnbench resume {sweep_dir}`, or sweep into a new folder (drop "
                f"hydra.sweep.dir=...)."
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # How many jobs were filled from earlier runs (rundir/reuse.py), and the training time that saved.
        from cnnbench.rundir.reuse_fill import reuse_summary

        summary = reuse_summary(Path(str(config.hydra.sweep.dir)))
        if summary:
            print(summary, flush=True)


def _named_by_user(config: DictConfig, key: str) -> bool:
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def _claim_folder(folder: Path) -> Path:
    """``folder``, or ``folder_1``, ``folder_2``...: the first that this process creates (mkdir is
    exclusive, also between processes and machines sharing the file system)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = folder if n == 0 else folder.with_name(f"{folder.name}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CnnbenchError(f"Could not create a new folder beside {folder}: 10,000 names are taken.")


def _claim_sweep_folder(config: DictConfig, sweep_dir: Path) -> Path:
    """A sweep folder of its own. Hydra composes each job's config again and resolves the sweep folder's
    ${now:} stamp from the cache it copies from this config, so a suffix goes into that cached stamp."""
    from omegaconf import OmegaConf

    if "${now:" not in str(OmegaConf.to_container(config.hydra.sweep)["dir"]):
        return sweep_dir  # a pattern without a stamp names its folder: the check below applies
    claimed = _claim_folder(sweep_dir)
    if claimed != sweep_dir:
        suffix = claimed.name[len(sweep_dir.name) :]
        cache = OmegaConf.get_cache(config)
        for key, stamp in list(cache.get("now", {}).items()):
            if str(stamp) in str(sweep_dir):
                cache["now"][key] = f"{stamp}{suffix}"
        OmegaConf.set_cache(config, cache)
        if Path(str(config.hydra.sweep.dir)) != claimed:  # a pattern that does not end in the stamp
            claimed.rmdir()
            return sweep_dir
    return claimed


@contextmanager
def _refusals() -> Iterator[None]:
    """Whatever goes wrong while checking becomes a refusal: Hydra turns an exception raised by a callback
    into a warning and then writes .hydra/ (or multirun.yaml) over the folder it was checking."""
    try:
        yield
    except SystemExit:
        raise
    except CnnbenchError as error:
        _refuse(error)
    except Exception as exc:  # a defect of cnnbench's checks, not of the input: still nothing is written
        _refuse(
            CnnbenchError(
                f"cnnbench could not check this command before starting ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}). "
                f"Nothing was written. Check the values on the command line (`cnnbench config ...` prints "
                f"the composed config); if they look right, this is a defect of cnnbench: please report "
                f"the command."
            )
        )


def _refuse_unswept_experiment(config: DictConfig) -> None:
    """An experiment that carries a sweep (hydra.sweeper.params), started without -m, would silently
    train only its first configuration for the full budget; refuse unless every swept key is set."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    given = {o.key_or_group for o in overrides}
    unset = [key for key in params if key not in given]
    if unset:
        experiment = next((o.value() for o in overrides if o.key_or_group == "experiment"), "this experiment")
        sweep = "; ".join(f"{key}: {params[key]}" for key in params)
        example = " ".join(f"{key}={str(params[key]).split(',')[0]}" for key in unset)
        _refuse(
            CnnbenchError(
                f"experiment={experiment} is a sweep ({sweep}); without -m only one of its jobs would train. "
                f"Run the sweep with `cnnbench train -m experiment={experiment}`, or train one of its jobs "
                f"by setting {', '.join(unset)} too (e.g. `cnnbench train experiment={experiment} "
                f"{example}`)."
            )
        )


def _refuse_unnamed_sweeps(config: DictConfig) -> None:
    """Job folders are named without the excluded keys (experiment): sweeping one would collide."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    excluded = set(config.hydra.job.config.override_dirname.exclude_keys)
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = [o.key_or_group for o in overrides if o.is_sweep_override() and o.key_or_group in excluded]
    if swept:
        _refuse(
            CnnbenchError(
                f"Sweeping over {', '.join(swept)} would put several jobs in one folder (job folders are "
                f"named by the other overrides). Launch one sweep per experiment, e.g. "
                f"`cnnbench train -m experiment=degradation_quick`."
            )
        )


def _discard_unstarted(run_dir: Path) -> None:
    """Remove the folders this call created for a run that never wrote a checkpoint or metrics."""
    import logging
    import shutil

    from cnnbench.rundir.lock import HELD, probe

    existing = _new_run_folder.get("existing_parent")
    run_dir = run_dir.resolve()
    if existing is None or existing not in run_dir.parents or holds_run(run_dir):
        return
    if probe(run_dir).state == HELD:  # another process won the race into the same new folder: its own
        return
    for handler in logging.getLogger().handlers[:]:  # train.log: closed before its folder goes
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent == existing:
            break
        try:
            parent.rmdir()  # only if empty: another run may have started in it meanwhile
        except OSError:
            break


def _outputs_root(cfg: DictConfig, hydra_cfg: Any, run_dir: Path, sweep_dir: Path | None) -> Path | None:
    """Where this job looks for runs of its identity (rundir/reuse.py); None under torchrun (no reuse)."""
    from omegaconf import OmegaConf

    from cnnbench.rundir.reuse import outputs_root, settings_of

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    raw = OmegaConf.to_container(hydra_cfg, resolve=False)
    cwd = Path(str(hydra_cfg.runtime.cwd))
    own = sweep_dir if sweep_dir is not None else run_dir
    run_pattern = _run_dir_pattern.get("dir", str(raw["run"]["dir"]))
    return outputs_root(run_pattern, str(raw["sweep"]["dir"]), own, cwd, settings_of(cfg).store).resolve()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def hydra_app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from cnnbench.commands.resume import resume_sweep_job
    from cnnbench.engine.trainer import run
    from cnnbench.rundir.reuse import reuse_or_train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        last_launch["run_dir"] = run_dir  # resolved once more by Hydra: this is the folder it uses
    # The jobs of a sweep train with one fast path (the first job's choice, in the sweep folder).
    sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    try:
        if os.environ.get(RESUME_ENV):
            metrics = resume_sweep_job(cfg, run_dir, sweep_dir)
        elif int(os.environ.get("RANK", "0")) > 0:
            metrics = run(cfg, run_dir, sweep_dir=sweep_dir)  # rank 0 decides about reuse (none: torchrun)
        else:
            with reuse_or_train(cfg, run_dir, _outputs_root(cfg, hydra_cfg, run_dir, sweep_dir)) as outcome:
                metrics = outcome.metrics or run(cfg, run_dir, sweep_dir=sweep_dir)
    except CnnbenchError as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweep reports the failed job with its overrides
        # One run: the message alone (no "Error executing job" preamble from Hydra), and a run refused
        # before it started leaves no folder behind.
        _discard_unstarted(run_dir)
        _refuse(error)
    # The final test error: what Hydra sweepers (e.g. Optuna) minimize.
    return metrics.get("test_error") if metrics else None
