"""A finished (or stopped) run, loaded for reading: ``load_trained(run_dir) -> TrainedRun``.

For the commands that use a run's weights after training (eval, export, analyze, landscape): the saved
config, the model with the checkpoint's weights in eval mode, and the normalization it was trained with.
Nothing in the run folder is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cnnbench.core.device import autocast, resolve_device
from cnnbench.engine.parts import DeviceData, load_device_data, model_options_of
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model
from cnnbench.rundir.checkpoint import load_checkpoint
from cnnbench.rundir.files import CHECKPOINT_NAME, read_metrics, saved_config


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: DictConfig
    metrics: dict[str, Any]  # metrics.json ({} when absent)
    checkpoint: dict[str, Any]
    model: torch.nn.Module  # on ``device``, eval mode, fp32, the checkpoint's weights
    device: torch.device
    mean: torch.Tensor  # the training set's normalization, on ``device``
    std: torch.Tensor
    num_classes: int

    @property
    def iteration(self) -> int:
        return int(self.checkpoint["iteration"])

    @property
    def complete(self) -> bool:
        return self.iteration >= int(self.cfg.trainer.max_iters)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the float input the model was trained on (no augmentation)."""
        return (images.to(self.device).float() / 255.0 - self.mean) / self.std

    def autocast(self, precision: str = "fp32"):
        return autocast(self.device, precision)()

    def load_data(self, overrides: dict[str, Any] | None = None) -> DeviceData:
        """The run's dataset (``overrides``: data.* keys replaced, e.g. another root) on the device."""
        data_cfg = OmegaConf.to_container(self.cfg.data, resolve=True)
        data_cfg.update(overrides or {})
        return load_device_data(OmegaConf.create({"data": data_cfg}), self.device)


def load_trained(
    run_dir: Path, device: str = "auto", checkpoint_name: str = CHECKPOINT_NAME, state_key: str = "model"
) -> TrainedRun:
    """Load ``run_dir``'s saved config and ``checkpoint_name`` onto ``device`` (``auto``: CUDA if present).

    ``state_key``: ``model`` (the trained weights) or ``ema`` (their moving average, trainer.ema_decay).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnbenchError(f"{run_dir} is not a folder; give a run folder written by `cnnbench train`.")
    cfg = saved_config(run_dir)
    # Exactly this file: a command that reads a run must not silently use older weights.
    checkpoint = load_checkpoint(run_dir / checkpoint_name, fallback=False)
    dev = resolve_device(device)
    if state_key == "ema":
        if not checkpoint.get("ema"):
            raise CnnbenchError(
                f"{run_dir} has no EMA weights: they exist only for runs trained with trainer.ema_decay "
                f"(e.g. 0.999). Evaluate its own weights with --weights last."
            )
        # AveragedModel's state: the averaged module's under "module.", and its update count.
        averaged = checkpoint["ema"]
        checkpoint = {
            **checkpoint,
            "model": {k[7:]: v for k, v in averaged.items() if k.startswith("module.")},
        }
    try:
        options = model_options_of(cfg)
        num_classes = int(
            checkpoint.get("num_classes")
            or checkpoint["model"][_classifier_bias(checkpoint["model"])].shape[0]
        )
        model = build_model(cfg.model.name, depth=int(cfg.depth), num_classes=num_classes, **options)
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CnnbenchError(
            f"The checkpoint {run_dir / checkpoint_name} does not fit the model its saved config builds "
            f"({str(exc).splitlines()[0][:200]}). Was .hydra/config.yaml edited? Nothing was changed."
        ) from None
    model = model.to(dev).eval()
    norm = checkpoint.get("normalization")
    if norm is not None:
        mean, std = norm["mean"].to(dev), norm["std"].to(dev)
    else:  # checkpoints of older versions: recompute from the training images, as training did
        from cnnbench.data.augment import normalization_stats

        data = load_device_data(cfg, dev)
        mean, std = normalization_stats(data.train_images, cfg.data.get("normalize", "pixel_mean"))
    return TrainedRun(
        run_dir=run_dir,
        cfg=cfg,
        metrics=read_metrics(run_dir) or {},
        checkpoint=checkpoint,
        model=model,
        device=dev,
        mean=mean,
        std=std,
        num_classes=num_classes,
    )


def _classifier_bias(state: dict[str, Any]) -> str:
    """The last 1-D parameter of the state dict whose name ends in ``bias``: the classifier's."""
    biases = [k for k, v in state.items() if k.endswith("bias") and getattr(v, "ndim", 0) == 1]
    if not biases:
        raise KeyError("no classifier bias in the checkpoint's model state")
    return biases[-1]
