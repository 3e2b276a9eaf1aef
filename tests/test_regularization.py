"""Regularization options in the engine: exact resume with all of them on, EMA arithmetic, schedules,
defaults unchanged, and bad values refused."""

from __future__ import annotations

import math
import signal

import pytest
import torch
from conftest import TINY

ALL_ON = [
    *TINY,
    "model=resnet",
    "trainer.max_iters=24",
    "trainer.ckpt_every=8",
    "trainer.eval_every=8",
    "trainer.log_every=4",
    "augment=randaugment",
    "augment.cutmix=1.0",
    "augment.mixup=0.4",
    "augment.jitter=0.3",
    "augment.lighting=0.1",
    "trainer.label_smoothing=0.1",
    "trainer.ema_decay=0.9",
    "optimizer=adamw",
    "optimizer.no_decay_bn_bias=true",
    "schedule=onecycle",
    "trainer.precision=fp32",
    "trainer.channels_last=true",
]


def _compose(*overrides: str):
    from cnnbench.commands.bench import compose_config

    return compose_config(list(overrides))


def _checkpoint(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


@pytest.fixture
def one_thread():
    """Bitwise equality needs the same thread count before and after; restored for the tests after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_exact_resume_with_every_option_on(tmp_path, monkeypatch, one_thread):
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run

    cfg = _compose(*ALL_ON)
    reference = run(cfg, tmp_path / "reference")
    assert reference["test_error_ema"] is not None

    step = TrainStep.__call__

    def step_with_ctrl_c(self, iteration):
        step(self, iteration)
        if iteration + 1 == 11:  # between checkpoints (8, 16): the stop writes its own
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    with pytest.raises(SystemExit):
        run(cfg, tmp_path / "resumed")
    assert _checkpoint(tmp_path / "resumed")["iteration"] == 11
    monkeypatch.setattr(TrainStep, "__call__", step)
    resumed = run(cfg, tmp_path / "resumed")  # trainer.resume=auto continues

    ours, theirs = _checkpoint(tmp_path / "resumed"), _checkpoint(tmp_path / "reference")
    for part in ("model", "ema"):
        for name, tensor in theirs[part].items():
            assert torch.equal(ours[part][name], tensor), (part, name)
    for key in ("train_loss", "train_error", "test_error", "test_error_ema", "test_loss_ema"):
        assert resumed[key] == reference[key], key


def test_ema_is_the_hand_computed_moving_average():
    from cnnbench.engine.parts import build_parts
    from cnnbench.engine.step import TrainStep

    parts = build_parts(_compose(*TINY, "trainer.ema_decay=0.25", "trainer.precision=fp32"))
    step = TrainStep(parts)
    step(0)
    first = [p.detach().clone() for p in parts.model.parameters()]
    step(1)
    second = [p.detach().clone() for p in parts.model.parameters()]
    # AveragedModel copies the weights at its first update, then ema = decay * ema + (1 - decay) * w.
    for ema, a, b in zip(parts.ema.module.parameters(), first, second, strict=True):
        assert torch.allclose(ema, 0.25 * a + 0.75 * b, atol=1e-6)
    assert int(parts.ema.n_averaged) == 2


def test_the_new_keys_at_their_off_values_change_nothing(tmp_path):
    """A config without any of the new keys (as saved by older versions) trains exactly as the default."""
    from cnnbench.engine.trainer import run

    base = [*TINY, "trainer.max_iters=8", "trainer.precision=fp32", "trainer.channels_last=true"]
    run(_compose(*base), tmp_path / "default")
    removed = [
        "~trainer.label_smoothing",
        "~trainer.ema_decay",
        "~optimizer.no_decay_bn_bias",
        "~schedule.warmup",
        *(f"~augment.{key}" for key in ("jitter", "lighting", "policy", "cutout", "mixup", "cutmix")),
    ]
    run(_compose(*base, *removed), tmp_path / "old")
    new, old = _checkpoint(tmp_path / "default")["model"], _checkpoint(tmp_path / "old")["model"]
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_no_decay_bn_bias_puts_the_1d_parameters_in_a_group_without_weight_decay():
    from cnnbench.core.optim import build_optimizer
    from cnnbench.models import build_model

    model = build_model("resnet", depth=8)
    cfg = {"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    (single,) = build_optimizer(model, cfg).param_groups
    assert single["weight_decay"] == 5e-4
    decay, no_decay = build_optimizer(model, {**cfg, "no_decay_bn_bias": True}).param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_onecycle_matches_torchs_one_cycle_lr():
    from cnnbench.core.schedule import make_lr_schedule

    iters, lr = 50, 0.2
    ours = make_lr_schedule({"name": "onecycle", "pct_start": 0.3}, lr, iters)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    theirs = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=iters, pct_start=0.3, cycle_momentum=False
    )
    for it in range(iters):
        assert math.isclose(ours(it), optimizer.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12), it
        optimizer.step()
        theirs.step()


def test_linear_warm_up_rises_to_the_schedule():
    from cnnbench.core.schedule import make_lr_schedule

    lr = make_lr_schedule(
        {"name": "cosine", "warmup_iters": 10, "warmup_lr": 0.0, "warmup": "linear", "min_lr": 0.0}, 0.1, 110
    )
    assert lr(0) == 0.0 and math.isclose(lr(5), 0.05) and math.isclose(lr(10), 0.1)
    constant = make_lr_schedule({"name": "paper", "warmup_iters": 400, "warmup_lr": 0.01}, 0.1, 64000)
    assert constant(0) == constant(399) == 0.01 and constant(400) == 0.1  # the paper's ResNet-110 warm-up


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.ema_decay=1.5", "trainer.ema_decay"),
        ("trainer.label_smoothing=-0.1", "trainer.label_smoothing"),
        ("augment.mix_prob=2", "mix_prob"),
        ("augment.cutout=40", "cutout"),
        ("augment.policy=autoaug", "policy"),
        ("schedule.warmup=sudden", "schedule.warmup"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(cli, tmp_path, override, needle):
    result = cli("train", *TINY, override, "hydra.run.dir=run")
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_eval_of_the_ema_weights_reproduces_the_logged_ema_test_error(cli, tmp_path):
    import json

    trained = cli("train", *TINY, "trainer.ema_decay=0.8", "trainer.precision=fp32", "hydra.run.dir=run")
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = cli("eval", "run", "--weights", "ema", "--precision", "run", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout[result.stdout.index("[") :])
    assert entry["weights"] == "ema" and entry["error"] == metrics["test_error_ema"]
