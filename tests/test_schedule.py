import math

import pytest

from cnnbench.core.schedule import make_lr_schedule
from cnnbench.errors import CnnbenchError

PAPER = {"name": "paper", "milestones": [32000, 48000], "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.01}


def test_paper_schedule_divides_by_ten_at_milestones():
    lr = make_lr_schedule(PAPER, 0.1, 64000)
    assert lr(0) == 0.1
    assert lr(31999) == 0.1
    assert math.isclose(lr(32000), 0.01)
    assert math.isclose(lr(47999), 0.01)
    assert math.isclose(lr(48000), 0.001)
    assert math.isclose(lr(63999), 0.001)


def test_resnet110_warmup():
    lr = make_lr_schedule({**PAPER, "warmup_iters": 400}, 0.1, 64000)
    assert lr(0) == 0.01
    assert lr(399) == 0.01
    assert lr(400) == 0.1
    assert math.isclose(lr(32000), 0.01)


def test_cosine_decays_to_min_lr():
    lr = make_lr_schedule({"name": "cosine", "min_lr": 0.0, "warmup_iters": 10, "warmup_lr": 0.01}, 0.1, 110)
    assert lr(5) == 0.01
    assert math.isclose(lr(10), 0.1)
    assert math.isclose(lr(60), 0.05)
    assert lr(109) < 0.001


def test_unknown_schedule_lists_choices():
    with pytest.raises(CnnbenchError, match="paper, cosine"):
        make_lr_schedule({"name": "step"}, 0.1, 10)
