"""A few training steps of every model family on digits through the CLI, and their bad options."""

from __future__ import annotations

import json

import pytest
from data_fixtures import write_cifar100, write_svhn

STEPS = ["data=digits", "trainer.max_iters=2", "trainer.batch_size=8", "trainer.log_every=1",
         "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.eval_batch_size=400"]  # fmt: skip

# Small members of each family, so the whole file stays fast on a CPU.
FAMILIES = {
    "resnet bottleneck": ["model=resnet", "depth=11", "model.block=bottleneck"],
    "resnet stochastic depth": ["model=resnet", "depth=14", "model.stochastic_depth=0.5"],
    "plain bottleneck": ["model=plain", "depth=11", "model.block=bottleneck"],
    "preact_resnet": ["model=preact_resnet", "depth=11"],
    "wide_resnet": ["model=wide_resnet", "depth=10", "model.width=2", "model.dropout=0.3"],
    "densenet-bc": ["model=densenet", "depth=16", "model.growth_rate=6"],
    "densenet": ["model=densenet", "depth=13", "model.bottleneck=false", "model.growth_rate=6"],
    "vgg": ["model=vgg", "depth=11"],
    "inception": ["model=inception"],
    "lenet5": ["model=lenet5"],
    "alexnet": ["model=alexnet"],
}


# Inception trains ~10x slower than the rest here (its default width on 32x32 images): under -m slow.
HEAVY = {"inception"}


@pytest.mark.parametrize(
    "overrides",
    [pytest.param(v, id=k, marks=[pytest.mark.slow] if k in HEAVY else []) for k, v in FAMILIES.items()],
)
def test_every_family_trains_through_the_cli(cli, tmp_path, overrides):
    result = cli("train", *STEPS, *overrides, "hydra.run.dir=run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iteration"] == 2
    assert 0.0 <= metrics["test_error"] <= 1.0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=wide_resnet", "depth=20"], ["depth=20", "6n+4", "16", "22"]),
        (["model=densenet", "depth=41"], ["depth=41", "densenet"]),
        (["model=vgg", "depth=12"], ["11, 13, 16, 19"]),
        (["model=plain", "depth=14", "model.stochastic_depth=0.5"], ["stochastic_depth"]),
        (["model=resnet", "depth=14", "model.block=bottleneck"], ["9n+2"]),
        (["model=resnet", "depth=20", "model.shortcut=C"], ["shortcut", "A", "B"]),
    ],
    ids=["wrn depth", "densenet depth", "vgg depth", "plain stoch. depth", "bottleneck depth", "shortcut"],
)
def test_options_that_do_not_fit_a_family_are_clear_errors(cli, overrides, expected):
    result = cli("train", *STEPS, *overrides)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, (text, result.output)


def test_cifar100_and_svhn_folders_train(cli, tmp_path):
    write_cifar100(tmp_path / "data", n_train=40, n_test=20)
    write_svhn(tmp_path / "data", n_train=40, n_test=20)
    for name in ("cifar100", "svhn"):
        common = [f"data.root={tmp_path / 'data'}", "data.download=false", f"hydra.run.dir={name}"]
        result = cli("train", *STEPS, f"data={name}", "model=resnet", "depth=8", *common)
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / name / "metrics.json").read_text())["data"] == name
