"""Everything one run trains with, built from the composed config: ``build_parts(cfg) -> Parts``.

The order of construction is part of the result: the data is loaded first (it draws from no global
generator) and the fast path resolved (its probe may use the global RNG), then the global RNG is
seeded and the model, optimizer, sampler and augmentation are built from it, so the same seed gives the
same initial weights (and the same run, bit for bit) whoever builds the parts, `cnnbench train` or
`cnnbench bench`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cnnbench.core.compiling import compile_module, fresh_compiler
from cnnbench.core.device import autocast, resolve_device
from cnnbench.core.distributed import DistContext, context, init
from cnnbench.core.numerics import set_tf32
from cnnbench.core.optim import build_optimizer
from cnnbench.core.rng import seed_everything
from cnnbench.core.schedule import LrSchedule
from cnnbench.data import load_dataset
from cnnbench.data.augment import BatchAugment, normalization_stats
from cnnbench.data.loader import DeviceBatches
from cnnbench.data.mixing import BatchMix
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.choice import FastPath
from cnnbench.fastpath.compilecache import SWEEP_CACHE_DIR, use_shared_cache
from cnnbench.fastpath.request import FastPathRequest
from cnnbench.fastpath.resolve import resolve
from cnnbench.launchers.slots import job_device
from cnnbench.models import build_model
from cnnbench.models.ghostbn import use_ghost_bn

log = logging.getLogger("cnnbench")


def model_options_of(cfg: DictConfig) -> dict[str, Any]:
    """The ``model.*`` keys the builder takes (all but the name and the default depth)."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in options.items() if k not in ("name", "default_depth")}


@dataclass
class DeviceData:
    """The dataset as uint8 tensors on the training device, and what the records say about it."""

    name: str
    synthetic: bool
    num_classes: int
    train_images: torch.Tensor
    train_labels: torch.Tensor
    # split name ("test", and "val" with data.val_size) -> (images, labels)
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Parts:
    """What the step, the evaluation and the checkpoint work on. Built once per run by ``build_parts``."""

    cfg: DictConfig
    dist: DistContext
    device: torch.device
    # What the run trains with and how it was chosen: ``fast_path.precision`` (fp32, bf16 or fp16: what
    # ``trainer.precision`` resolved to), ``.compile``, ``.memory_format``, ``.cuda_graphs``, ...
    fast_path: FastPath
    autocast: Callable[[], contextlib.AbstractContextManager]
    data: DeviceData
    model: torch.nn.Module  # the bare model: its state_dict is the checkpoint's
    train_forward: torch.nn.Module  # compiled and/or DDP-wrapped model used by the training step
    eval_forward: torch.nn.Module  # compiled bare model used by evaluation (rank 0 only)
    optimizer: torch.optim.Optimizer
    lr_at: LrSchedule  # lr_at(iteration) -> float; holds the warm-up rule (schedule.warmup_until_error)
    scaler: torch.amp.GradScaler | None
    batches: DeviceBatches
    augment: BatchAugment
    mix: BatchMix  # mixup / CutMix of whole batches (``mix.enabled`` False: off)
    label_smoothing: float
    ema: torch.optim.swa_utils.AveragedModel | None  # the EMA of the weights (trainer.ema_decay > 0)
    params: int = field(init=False)

    def __post_init__(self) -> None:
        self.params = sum(p.numel() for p in self.model.parameters())

    @property
    def batch_size(self) -> int:
        """The global batch (over all ranks)."""
        return int(self.cfg.trainer.batch_size)

    @property
    def cuda_graphs(self) -> bool:
        """Whether the model update runs as a captured CUDA graph (``update/graphs.py``)."""
        return self.fast_path.cuda_graphs

    @contextlib.contextmanager
    def compile_fallback(self) -> Iterator[None]:
        """While training: an ``auto``-chosen compile that cannot build runs eagerly instead of failing.

        Scoped to the run (restored afterwards), so no other code in the process inherits it.
        """
        if not (self.fast_path.compile and self.cfg.trainer.compile == "auto"):
            yield
            return
        import torch._dynamo

        with torch._dynamo.config.patch(suppress_errors=True):
            yield


def load_device_data(cfg: DictConfig, device: torch.device) -> DeviceData:
    data = load_dataset(**OmegaConf.to_container(cfg.data, resolve=True))
    to_dev = {"device": device, "non_blocking": True}
    eval_sets = {"test": (data.test_images.to(**to_dev), data.test_labels.to(**to_dev))}
    if data.val_images is not None:
        eval_sets["val"] = (data.val_images.to(**to_dev), data.val_labels.to(**to_dev))
    return DeviceData(
        name=data.name,
        synthetic=data.synthetic,
        num_classes=data.num_classes,
        train_images=data.train_images.to(**to_dev),
        train_labels=data.train_labels.to(**to_dev),
        eval_sets=eval_sets,
    )


def _build_model(cfg: DictConfig, num_classes: int, dist: DistContext, device: torch.device):
    model = build_model(
        cfg.model.name, depth=int(cfg.depth), num_classes=num_classes, **model_options_of(cfg)
    )
    if cfg.trainer.get("bn_group"):  # the paper's BatchNorm over 64 images per GPU (models/ghostbn.py)
        model = use_ghost_bn(model, int(cfg.trainer.bn_group))
    if dist.enabled and cfg.trainer.sync_bn:
        if device.type != "cuda":
            raise CnnbenchError(
                "trainer.sync_bn=true needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on CPUs "
                "drop it: each process then normalizes over its share of the batch."
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def resolve_fast_path(
    cfg: DictConfig,
    device: torch.device,
    dist: DistContext,
    recorded: dict[str, Any] | None = None,
    sweep_record: Path | None = None,
) -> FastPath:
    """``cnnbench.fastpath.resolve.resolve`` on rank 0, shared with the other ranks (one choice per run)."""

    def resolved() -> FastPath:
        request = FastPathRequest.from_config(
            cfg, recorded, sweep_record, device=device, distributed=dist.enabled
        )
        return resolve(request)

    if not dist.enabled:
        return resolved()
    import torch.distributed as torch_dist

    shared = [resolved().record() if dist.is_main else None]
    torch_dist.broadcast_object_list(shared, src=0)
    return FastPath(**shared[0])


def build_parts(
    cfg: DictConfig,
    dist: DistContext | None = None,
    recorded: dict[str, Any] | None = None,
    sweep_record: Path | None = None,
) -> Parts:
    """Seed, pick the device and fast path, load the data onto the device, build model and optimizer.

    ``recorded``: the fast path a resumed run trained with; ``sweep_record``: the sweep's shared choice.
    """
    t = cfg.trainer
    dist = dist or context()
    device = resolve_device(job_device(t.device))
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    init(dist)
    if sweep_record is not None:
        # One compile cache for the sweep's jobs (joblib workers, SLURM nodes sharing the folder), set
        # before anything compiles: the probe, the model, the evaluation.
        use_shared_cache(sweep_record.parent / SWEEP_CACHE_DIR)
    # The data first (it draws from no global generator): a bad data setting or a missing download is
    # reported before the fast-path probe spends its seconds.
    data = load_device_data(cfg, device)
    fast_path = resolve_fast_path(cfg, device, dist, recorded, sweep_record)
    precision = fast_path.precision
    seed = int(cfg.seed)
    seed_everything(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_tf32(t.get("tf32"))  # trainer.tf32=false: true fp32 convolutions (numerics=paper)

    memory_format = fast_path.memory_format
    model = _build_model(cfg, data.num_classes, dist, device).to(device, memory_format=memory_format)
    compiled = fast_path.compile

    if compiled:
        fresh_compiler()  # graphs of earlier runs in this process (a notebook, a worker) set nothing here

    def maybe_compile(module: torch.nn.Module, static_shapes: bool) -> torch.nn.Module:
        if not compiled:
            return module
        return compile_module(module, fast_path.compile_mode, static_shapes=static_shapes)

    train_model: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    # Static shapes (full batches only) let the compiled training graph be reused every step
    # (core/compiling.py); evaluation's last batch is smaller, so its graph may take any batch size.
    # Evaluation uses the bare model: only rank 0 evaluates, and DDP's forward would wait for the others.
    train_forward = maybe_compile(train_model, static_shapes=True)
    eval_forward = maybe_compile(model, static_shapes=False)

    # A captured update reads the lr from a device tensor (the schedule fills it in place); otherwise the
    # lr stays a float per group, as it always was.
    optimizer = build_optimizer(
        model, cfg.optimizer, fused=fast_path.fused_optimizer, lr_tensor=fast_path.cuda_graphs
    )
    lr_at = LrSchedule(cfg.schedule, float(cfg.optimizer.lr), int(t.max_iters))
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    batches = DeviceBatches(
        data.train_images, data.train_labels, int(t.batch_size), seed=seed, shard=(dist.rank, dist.world_size)
    )
    mean, std = normalization_stats(data.train_images, cfg.data.get("normalize", "pixel_mean"))
    generator = torch.Generator(device=device).manual_seed(augment_seed(seed, dist.rank))
    augment = BatchAugment.from_config(cfg.augment, mean, std, generator, memory_format=memory_format)
    mix = BatchMix.from_config(cfg.augment, generator)  # the same stream: checkpointed with it
    ema = _ema(model, float(t.get("ema_decay", 0.0) or 0.0))
    return Parts(
        cfg=cfg,
        dist=dist,
        device=device,
        fast_path=fast_path,
        autocast=autocast(device, precision),
        data=data,
        model=model,
        train_forward=train_forward,
        eval_forward=eval_forward,
        optimizer=optimizer,
        lr_at=lr_at,
        scaler=scaler,
        batches=batches,
        augment=augment,
        mix=mix,
        label_smoothing=float(t.get("label_smoothing", 0.0) or 0.0),
        ema=ema,
    )


def _ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm buffers (torch's AveragedModel)."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    from cnnbench.engine.ema import SyncFreeAveragedModel

    return SyncFreeAveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def augment_seed(seed: int, rank: int, iteration: int = 0) -> int:
    """The seed of a rank's augmentation stream (a resumed rank > 0 re-seeds at its iteration)."""
    return seed + 1 + 1000 * rank + iteration
