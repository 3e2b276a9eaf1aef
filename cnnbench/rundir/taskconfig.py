"""A composed job config as Hydra's task function gets it: what the checks and the trainer read."""

from __future__ import annotations

from omegaconf import DictConfig


def task_config(config: DictConfig) -> DictConfig:
    """The job's config as the task function gets it: everything but the ``hydra`` section."""
    from omegaconf import OmegaConf

    task = OmegaConf.create({key: config[key] for key in config if key != "hydra"})
    OmegaConf.set_struct(task, True)
    return task
