"""Gradient flow logged while training: the grouping of every family, the values, the steps, and no
effect on the training result."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnbench.engine.gradflow import GradFlow, block_groups, stage_groups
from cnnbench.models import build_model, get_model_spec, list_models


def _compose(*overrides: str):
    from cnnbench.commands.bench import compose_config

    return compose_config(list(overrides))


@pytest.mark.parametrize("name", list_models())
def test_every_family_is_grouped_into_stages_and_blocks_covering_all_parameters(name):
    model = build_model(name, depth=get_model_spec(name).example_depths[0])
    stages, blocks = stage_groups(model), block_groups(model)
    assert len(stages) >= 2 and len(blocks) >= len(stages)
    for groups in (stages, blocks):
        covered = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
        assert len(covered) == len(set(covered)), "a parameter in two groups"
        assert set(covered) == {id(p) for p in model.parameters()}, "a parameter in no group"


def test_a_resnet_has_stem_stages_blocks_and_classifier():
    model = build_model("resnet", depth=20)
    assert [name for name, _ in stage_groups(model)] == ["stem", "layer1", "layer2", "layer3", "classifier"]
    blocks = [name for name, _ in block_groups(model)]
    assert blocks[0] == "stem" and blocks[-1] == "classifier"
    assert blocks[1:-1] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]


def test_norms_equal_a_direct_computation():
    torch.manual_seed(0)
    model = build_model("resnet", depth=8)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model(x).logsumexp(1).sum().backward()
    flow = GradFlow(model, every=1)
    grad, weight = flow.measure().tolist()
    layer1 = dict(model.named_children())["layer1"]
    stem = [dict(model.named_children())[n] for n in ("conv1", "bn1")]
    for tag, modules in (("stage/layer1", [layer1]), ("block/stem", stem)):
        params = [p for m in modules for p in m.parameters()]
        i = flow.tags.index(tag)
        assert math.isclose(
            grad[i], torch.cat([p.grad.flatten() for p in params]).norm().item(), rel_tol=1e-5
        )
        assert math.isclose(weight[i], torch.cat([p.flatten() for p in params]).norm().item(), rel_tol=1e-5)
    ((_, scalars),) = list((flow.record(7), flow.flush())[1])
    first, last = scalars["grad_norm/block/stem"], scalars["grad_norm/block/classifier"]
    assert math.isclose(scalars["grad_norm/ratio_first_last"], first / last, rel_tol=1e-6)


def _weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_logged_at_the_right_steps_without_changing_the_result(tmp_path):
    from cnnbench.engine.trainer import run

    overrides = [
        *TINY,
        "model=resnet",
        "trainer.max_iters=12",
        "trainer.log_every=4",
        "trainer.precision=fp32",
    ]
    run(_compose(*overrides, "trainer.log_grad_every=3"), tmp_path / "on")
    run(_compose(*overrides, "trainer.log_grad_every=0"), tmp_path / "off")
    on, off = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert all(torch.equal(on[k], off[k]) for k in on), "gradient logging changed the trained weights"

    acc = EventAccumulator(str(tmp_path / "on"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in (
        "grad_norm/stage/layer2",
        "grad_norm/block/layer1.0",
        "weight_norm/stage/stem",
        "grad_norm/ratio_first_last",
    ):
        assert tag in tags, tag
        assert [e.step for e in acc.Scalars(tag)] == [3, 6, 9, 12]
    assert all(v.value > 0 for v in acc.Scalars("weight_norm/block/classifier"))
    off_acc = EventAccumulator(str(tmp_path / "off"), size_guidance={"scalars": 0})
    off_acc.Reload()
    assert not [t for t in off_acc.Tags()["scalars"] if t.startswith(("grad_norm/", "weight_norm/"))]


def test_a_negative_interval_is_refused(cli, tmp_path):
    result = cli("train", *TINY, "trainer.log_grad_every=-1", "hydra.run.dir=run")
    assert result.exit_code == 2 and "trainer.log_grad_every" in result.output
    assert "Traceback" not in result.output
