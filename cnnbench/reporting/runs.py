"""Finding run folders and reading what the trainer wrote into them (metrics.json, config, TensorBoard)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench.core.numerics import bn_images, describe
from cnnbench.rundir.files import METRICS_NAME, SAVED_CONFIG, read_env

# Config sections that define the experiment. Everything else (trainer, device, seed, hydra, logging)
# may differ between runs that are still seeds of one configuration.
_DESIGN_SECTIONS = ("data", "augment", "optimizer", "schedule")
# Except the training budget: a 2k-iteration smoke run must not be averaged with a 64k-iteration one.
_DESIGN_TRAINER_KEYS = ("max_iters", "batch_size", "label_smoothing", "ema_decay")
# Design keys added later: left out while unset, so older runs (without them) stay seeds of the
# same configuration. Ghost BatchNorm changes the training, so a set trainer.bn_group tells runs apart.
_DESIGN_KEYS_IF_SET = ("schedule.warmup_until_error", "trainer.bn_group")
# Where the data lives or how it is fetched does not change the experiment.
_IGNORED_DESIGN_KEYS = {"data.root", "data.download", "data.num_workers", "data.url", "data.md5"}
# Options a family accepts but does not use (plain nets take `shortcut` only so sweeps over
# model=plain,resnet can set it); grouping on them would split identical configurations.
_UNUSED_OPTIONS = {"plain": {"shortcut"}}
# Model-section keys that are not options of the network: its name, and the depth used when `depth`
# is not given (the trained depth is the top-level `depth`; the trainer leaves both out too).
_NOT_OPTIONS = {"name", "default_depth"}


@dataclass
class Curve:
    steps: np.ndarray  # iterations
    values: np.ndarray


@dataclass
class RunRecord:
    """One run folder: what metrics.json and .hydra/config.yaml say about it."""

    path: Path
    status: str
    model: str
    depth: int | None
    data: str
    augment: str | None  # None: unknown (no config)
    options: dict[str, Any]  # model options other than the name
    design: dict[str, Any]  # flattened experiment settings other than model/depth (optimizer.lr, ...)
    seed: int | None
    params: int | None
    iteration: int | None
    max_iters: int | None
    train_error: float | None  # fractions, as the trainer writes them
    test_error: float | None
    best_test_error: float | None
    message: str | None
    has_config: bool
    config: dict[str, Any] = field(default_factory=dict)
    # Model selection on a validation split (data.val_size); None without one.
    best_val_error: float | None = None
    test_error_at_best_val: float | None = None  # the honest test number: weights picked on validation
    numerics: str | None = None  # e.g. "paper (fp32, BN/64)" (cnnbench.core.numerics); None: unknown

    def primary_key(self) -> str:
        """What a configuration is named by: data, augmentation, model, options, depth."""
        return json.dumps(
            [self.data, self.augment, self.model, self.options, self.depth], sort_keys=True, default=str
        )

    def key(self) -> str:
        """Runs with the same key differ only by seed (and trainer/device settings)."""
        return json.dumps([self.primary_key(), self.design], sort_keys=True, default=str)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SAVED_CONFIG
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        conf = OmegaConf.load(path)
        # resolve=False: interpolations such as ${hydra:...} cannot be resolved outside the Hydra job.
        loaded = OmegaConf.to_container(conf, resolve=False)
    except Exception as exc:  # YAML and OmegaConf errors have no common base class
        raise ValueError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(loaded, dict):
        return None
    if isinstance(loaded.get("depth"), str):
        # Without a depth override Hydra saves `depth: ${model.default_depth}`; that one resolves here.
        # Another interpolation stays as it is (metrics.json's depth is used instead).
        with contextlib.suppress(Exception):
            loaded["depth"] = conf.depth
    return loaded


def _fraction(value: Any) -> float | None:
    """A finite number, else None (null before the first evaluation, NaN after a divergence)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _section_name(section: Any) -> str | None:
    if isinstance(section, Mapping):
        section = section.get("name")
    return None if section is None else str(section)


def read_record(run_dir: Path) -> RunRecord:
    """Read one run folder; an unreadable metrics.json or config raises ValueError (the caller warns and
    skips the run)."""
    if not (run_dir / METRICS_NAME).exists():
        raise ValueError("it has no metrics.json (the run never started training)")
    try:
        metrics = json.loads((run_dir / METRICS_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_dir / METRICS_NAME} is unreadable ({exc})") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{run_dir / METRICS_NAME} is not a JSON object")
    config = _read_config(run_dir)
    cfg = config or {}
    model_section = cfg.get("model")
    model = _section_name(model_section) or str(metrics.get("model") or "unknown")
    options = (
        {k: v for k, v in model_section.items() if k not in _NOT_OPTIONS}
        if isinstance(model_section, dict)
        else {}
    )
    for unused in _UNUSED_OPTIONS.get(model, ()):
        options.pop(unused, None)
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    design = {
        k: v
        for k, v in flatten({s: cfg[s] for s in _DESIGN_SECTIONS if s in cfg}).items()
        # `_target_` (the optimizer's class) follows from its name, which is shown already.
        if k not in _IGNORED_DESIGN_KEYS and not k.rsplit(".", 1)[-1].startswith("_")
    }
    design.update({f"trainer.{k}": trainer[k] for k in (*_DESIGN_TRAINER_KEYS, "bn_group") if k in trainer})
    for key in _DESIGN_KEYS_IF_SET:
        if design.get(key) is None:
            design.pop(key, None)
    seed = cfg.get("seed", metrics.get("seed"))
    depth = _int(cfg.get("depth"))
    if depth is None:  # no config, or a depth interpolation that did not resolve
        depth = _int(metrics.get("depth"))
    max_iters = metrics.get("max_iters")
    return RunRecord(
        path=run_dir,
        status=str(metrics.get("status") or "unknown"),
        model=model,
        depth=depth,
        data=_section_name(cfg.get("data")) or str(metrics.get("data") or "unknown"),
        augment=_section_name(cfg.get("augment")),
        options=options,
        design=design,
        seed=_int(seed),
        params=_int(metrics.get("params")),
        iteration=_int(metrics.get("iteration")),
        max_iters=_int(max_iters if max_iters is not None else trainer.get("max_iters")),
        train_error=_fraction(metrics.get("train_error")),
        test_error=_fraction(metrics.get("test_error")),
        best_test_error=_fraction(metrics.get("best_test_error")),
        message=str(metrics["message"]) if metrics.get("message") else None,
        has_config=config is not None,
        config=cfg,
        best_val_error=_fraction(metrics.get("best_val_error")),
        test_error_at_best_val=_fraction(metrics.get("test_error_at_best_val")),
        numerics=numerics_label(read_env(run_dir), trainer),
    )


def numerics_label(env: Mapping[str, Any] | None, trainer: Mapping[str, Any]) -> str | None:
    """What env.json says about the run's numerics; for runs older than the record, derived from the
    precision it used and its batch (fp32 on CUDA counted as TF32, PyTorch's default). None: unknown."""
    if not env:
        return None
    recorded = env.get("numerics")
    if isinstance(recorded, Mapping) and recorded.get("label"):
        return str(recorded["label"])
    precision, batch = env.get("precision"), _int(trainer.get("batch_size"))
    if not isinstance(precision, str) or batch is None:
        return None
    world = _int(env.get("world_size")) or 1
    images = bn_images(batch, world, trainer.get("bn_group"), bool(trainer.get("sync_bn")))
    tf32 = precision == "fp32" and str(env.get("device", "")).startswith("cuda")
    return describe(precision, images, tf32=tf32, bn_group=trainer.get("bn_group"))["label"]


def read_curves(run_dir: Path, tags: Iterable[str] = ("error/train", "error/test")) -> dict[str, Curve]:
    """The TensorBoard scalars of a run folder (all points), keyed by tag; missing tags are left out. A tag
    ending in ``/`` (``grad_norm/stage/``) stands for every tag under it, in sorted order."""
    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # scalars=0 keeps every point (the default samples 10k); a resumed run's restart is purged by step.
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    available = set(acc.Tags().get("scalars", []))
    wanted = []
    for tag in tags:
        wanted += sorted(t for t in available if t.startswith(tag)) if tag.endswith("/") else [tag]
    curves = {}
    for tag in wanted:
        if tag in available:
            events = acc.Scalars(tag)
            steps = np.array([e.step for e in events], dtype=np.int64)
            values = np.array([e.value for e in events], dtype=np.float64)
            order = np.argsort(steps, kind="stable")
            curves[tag] = Curve(steps[order], values[order])
    return curves
