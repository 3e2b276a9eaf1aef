"""The allowed values of every key of the composed config: one table, ``rules()``.

For each leaf key it says what the key may hold (type, range, choices; the kinds of rule are in
``cnnbench.rundir.value_rules``). ``cnnbench.rundir.value_checks`` walks a composed config through it before
anything is loaded or written. Keys whose values only a class knows (a model family's options, an
optimizer's arguments) are left out of the table: that class checks them itself.
"""

from __future__ import annotations

import math

from cnnbench.rundir.value_rules import (
    MAX_DEPTH,
    MAX_IMAGES,
    MAX_ITERS,
    MAX_SEED,
    Rule,
    choice,
    device,
    flag,
    milestones,
    number,
    pair,
    text,
    whole,
)


def _rules() -> dict[str, Rule]:
    from cnnbench.core.device import PRECISIONS
    from cnnbench.core.schedule import SCHEDULES, WARMUPS
    from cnnbench.data import DATASETS
    from cnnbench.data.augment import NORMALIZATIONS
    from cnnbench.data.policies import POLICIES, RA_BINS
    from cnnbench.rundir.continuation import RESUME_MODES
    from cnnbench.rundir.reuse import REUSE_MODES

    compile_modes = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    strength = number(0.0, example=0.4)
    return {
        "depth": whole(1, MAX_DEPTH, 20, what=" of layers"),
        "seed": whole(0, MAX_SEED, 0),
        "model.name": text("resnet", nullable=False, what="a model name (`cnnbench models` lists them)"),
        "model.default_depth": whole(1, MAX_DEPTH, 20),
        # --- data
        "data.name": choice(sorted(DATASETS), "cifar10"),
        "data.root": text("~/data", what="a folder"),
        "data.download": flag(True),
        "data.url": text(
            "file:///path/to/cifar-10-python.tar.gz", what="an http(s):// or file:// URL or a path"
        ),
        "data.md5": text(
            "c58f30108f718f92721af3b95e74349a", pattern=r"[0-9a-fA-F]{32}", what="32 hex digits"
        ),
        "data.val_size": whole(0, MAX_IMAGES, 5000, what=" of images"),
        "data.normalize": choice(NORMALIZATIONS),
        "data.extra": flag(False),
        "data.train_size": whole(1, MAX_IMAGES, 50000, what=" of images"),
        "data.test_size": whole(1, MAX_IMAGES, 10000, what=" of images"),
        "data.num_classes": whole(2, 100_000, 10, what=" of classes"),
        # --- augmentation
        "augment.name": text("standard", nullable=False, what="a label"),
        "augment.padding": whole(0, 1024, 4, what=" of pixels"),
        "augment.flip": flag(True),
        "augment.scale": pair(0.0, 1.0, [0.25, 1.0], nullable=True, low_open=True),
        "augment.ratio": pair(0.0, math.inf, [0.75, 1.3333333333333333], low_open=True),
        **{f"augment.{k}": strength for k in ("jitter", "brightness", "contrast", "saturation", "lighting")},
        "augment.policy": choice(POLICIES, "none"),
        "augment.policy_n": whole(1, 100, 2, what=" of ops"),
        "augment.policy_m": whole(0, RA_BINS - 1, 9),
        "augment.cutout": whole(0, 1024, 16, what=" of pixels"),
        "augment.mixup": number(0.0, example=0.2),
        "augment.cutmix": number(0.0, example=1.0),
        "augment.mix_prob": number(0.0, 1.0, 1.0),
        "augment.mix_switch_prob": number(0.0, 1.0, 0.5),
        # --- optimizer (the class checks the rest of its arguments itself)
        "optimizer._target_": text("torch.optim.SGD", nullable=False, what="an optimizer class"),
        "optimizer.name": text("sgd", nullable=False, what="a label"),
        "optimizer.lr": number(0.0, example=0.1, low_open=True),
        "optimizer.momentum": number(0.0, example=0.9),
        "optimizer.weight_decay": number(0.0, example=1e-4),
        "optimizer.dampening": number(0.0, 1.0, 0.0),
        "optimizer.nesterov": flag(False),
        "optimizer.betas": pair(0.0, 1.0, [0.9, 0.999]),
        "optimizer.eps": number(0.0, example=1e-8),
        "optimizer.no_decay_bn_bias": flag(False),
        # --- schedule
        "schedule.name": choice(SCHEDULES, "paper"),
        "schedule.milestones": milestones(),
        "schedule.gamma": number(0.0, example=0.1, low_open=True),
        "schedule.min_lr": number(0.0, example=0.0),
        "schedule.warmup_iters": whole(0, MAX_ITERS, 400, what=" of iterations"),
        "schedule.warmup_lr": number(0.0, example=0.01),
        "schedule.warmup": choice(WARMUPS),
        "schedule.warmup_until_error": number(
            0.0, 1.0, 0.8, low_open=True, nullable=True, what="a training error (0.8 = 80%)"
        ),
        "schedule.pct_start": number(0.0, 1.0, 0.3, low_open=True, high_open=True),
        "schedule.div_factor": number(0.0, example=25.0, low_open=True),
        "schedule.final_div_factor": number(0.0, example=1e4, low_open=True),
        # --- trainer
        "trainer.max_iters": whole(1, MAX_ITERS, 64000, what=" of iterations"),
        "trainer.batch_size": whole(1, MAX_IMAGES, 128, what=" of images"),
        "trainer.eval_every": whole(1, MAX_ITERS, 400, what=" of iterations"),
        "trainer.eval_batch_size": whole(1, MAX_IMAGES, 1000, what=" of images"),
        "trainer.log_every": whole(1, MAX_ITERS, 100, what=" of iterations"),
        "trainer.ckpt_every": whole(1, MAX_ITERS, 2000, what=" of iterations"),
        "trainer.device": device(),
        "trainer.precision": choice(PRECISIONS, "auto"),
        "trainer.allow_slow_precision": flag(False),
        "trainer.compile": flag(False, also=["auto"]),
        "trainer.compile_mode": choice(compile_modes, "auto"),
        "trainer.channels_last": flag(False, also=["auto"]),
        "trainer.cuda_graphs": flag(False, also=["auto"]),
        "trainer.fused_optimizer": flag(False, also=["auto"]),
        "trainer.sync_bn": flag(False),
        "trainer.bn_group": whole(1, MAX_IMAGES, 64, nullable=True, what=" of images"),
        "trainer.tf32": flag(False, also=[None]),
        "trainer.log_grad_every": whole(0, MAX_ITERS, 100, what=" of iterations (0 = off)"),
        "trainer.resume": choice(RESUME_MODES, "auto"),
        "trainer.label_smoothing": number(0.0, 1.0, 0.1, high_open=True),
        "trainer.ema_decay": number(0.0, 1.0, 0.999, high_open=True),
        # --- reuse (cnnbench/rundir/reuse.py)
        "reuse.mode": choice(REUSE_MODES, "auto"),
        "reuse.store": text("/data/cnnbench-outputs", what="a folder"),
        "reuse.wait_s": number(0.0, example=86400.0),
    }


_RULES: dict[str, Rule] = {}


def rules() -> dict[str, Rule]:
    """``RULES``: every fixed key of the composed config and what it may hold (built once, lazily: the
    choices come from the modules that own them)."""
    if not _RULES:
        _RULES.update(_rules())
    return _RULES


# Sections whose keys a class checks itself (model options, optimizer arguments): not in the table.
CHECKED_BY_CONSTRUCTION = ("model.", "optimizer.")
