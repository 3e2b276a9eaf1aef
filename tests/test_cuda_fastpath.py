"""The GPU fast path on a real GPU: CUDA graphs, the lr tensor, no host sync per step, fused SGD.

Every test here needs an NVIDIA GPU (``pytest -m cuda``); the default run deselects them. Their CPU
counterparts (the decision logic, the lr tensor's checkpoints, the captured-update wiring run eagerly,
the count of host reads) are in tests/test_fastpath.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY

pytestmark = pytest.mark.cuda  # skipped without a GPU, or failed if one is required: tests/conftest.py

CASE = [
    *TINY,
    "trainer.device=cuda",
    "trainer.channels_last=true",
    "trainer.compile=false",
    "trainer.fused_optimizer=true",
    "schedule=cosine",  # the lr changes at every step
    "trainer.max_iters=12",
]


@pytest.fixture(autouse=True)
def deterministic_cudnn(monkeypatch):
    """The same convolution algorithms in both runs of a comparison (build_parts turns benchmark on)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)


def _parts(*overrides: str, graphs: bool):
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.parts import build_parts

    return build_parts(compose_config([*CASE, f"trainer.cuda_graphs={str(graphs).lower()}", *overrides]))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, tol: float) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x.float(), y.float(), rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize(
    ("precision", "extra"),
    [("fp32", ()), ("bf16", ()), ("bf16", ("augment.mixup=0.2", "trainer.label_smoothing=0.1"))],
)
def test_the_captured_step_trains_like_the_eager_step(precision, extra):
    from cnnbench.engine.step import TrainStep

    eager_parts = _parts(f"trainer.precision={precision}", *extra, graphs=False)
    graph_parts = _parts(f"trainer.precision={precision}", *extra, graphs=True)
    assert graph_parts.cuda_graphs and not eager_parts.cuda_graphs
    eager, graphed = TrainStep(eager_parts), TrainStep(graph_parts)
    for it in range(12):  # 3 eager warm-up updates, the capture, 8 more replays
        eager(it)
        graphed(it)
    (graph,) = graphed.graphs.values()
    assert graph.captures == 1 and graph.calls == 12
    # The only difference: the lr as an fp32 tensor instead of a Python float.
    # (A stale input or a frozen lr would differ by the size of the updates themselves, ~1e-1.)
    tol = 1e-2 if precision == "bf16" else 1e-4
    _assert_same_weights(eager_parts.model, graph_parts.model, tol=tol)
    torch.testing.assert_close(eager.window_loss, graphed.window_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(eager.window_errors, graphed.window_errors, rtol=0, atol=1)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_new_lr_takes_effect_inside_the_graph_without_recapture_or_recompile(compiled):
    from torch._dynamo.utils import counters

    from cnnbench.core.optim import set_lr
    from cnnbench.engine.step import TrainStep

    parts = _parts("trainer.precision=bf16", f"trainer.compile={str(compiled).lower()}", graphs=True)
    step = TrainStep(parts)
    for it in range(5):  # past the warm-up and the capture
        step(it)
    graph = step.graphs["plain"]
    graphs_compiled = counters["stats"]["unique_graphs"]
    images, labels = parts.batches.next()
    x = parts.augment(images)
    params = list(parts.model.parameters())

    set_lr(parts.optimizer, 0.0)  # lr 0: the replayed update moves no weight
    before = [p.detach().clone() for p in params]
    step.update(x, labels)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))

    set_lr(parts.optimizer, 0.05)  # the same graph, a new value: the weights move by lr * momentum buffer
    step.update(x, labels)
    torch.cuda.synchronize()
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    assert graph.captures == 1
    assert counters["stats"]["unique_graphs"] == graphs_compiled  # and no recompilation


@pytest.mark.parametrize("graphs", [False, True])
def test_non_logging_steps_never_sync_with_the_host(graphs):
    from cnnbench.engine.step import TrainStep

    parts = _parts(
        "trainer.precision=bf16",
        "augment.mixup=0.2",
        "augment.cutmix=1.0",
        "trainer.label_smoothing=0.1",
        "trainer.ema_decay=0.9",
        "trainer.log_grad_every=2",
        graphs=graphs,
    )
    step = TrainStep(parts)
    for it in range(5):  # cuDNN's algorithm search, the warm-up, the capture, the EMA's first update
        step(it)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for it in range(5, 11):
            step(it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(step.window_loss).item()


def test_fused_sgd_on_cuda_matches_foreach_and_takes_a_tensor_lr():
    from cnnbench.models import build_model

    torch.manual_seed(0)
    models = [build_model("resnet", depth=8, num_classes=10).cuda() for _ in range(3)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    optimizers = [
        torch.optim.SGD(models[0].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True),
        torch.optim.SGD(models[1].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True),
        torch.optim.SGD(
            models[2].parameters(),
            lr=torch.tensor(0.1, device="cuda"),
            momentum=0.9,
            weight_decay=1e-4,
            fused=True,
        ),
    ]
    generator = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(5):
        images = torch.randn(16, 3, 32, 32, device="cuda", generator=generator)
        labels = torch.randint(0, 10, (16,), device="cuda", generator=generator)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    _assert_same_weights(models[0], models[1], tol=1e-4)
    _assert_same_weights(models[1], models[2], tol=1e-5)


def test_the_probe_runs_every_uncompiled_variant_on_this_gpu():
    from cnnbench.fastpath.choice import allowed_variants
    from cnnbench.fastpath.cuda import measure_variants

    names = [v.name for v in allowed_variants(None, None, None, consider_compile=False)]
    result = measure_variants(torch.device("cuda"), "bf16", True, names, budget_s=0.0, steps=2)
    assert set(result["timings_ms"]) == set(names)  # none failed to build, warm up or capture
    assert all(ms > 0 for ms in result["timings_ms"].values())


def test_a_run_with_cuda_graphs_records_them_and_its_resume_reuses_them(tmp_path):
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.trainer import Trainer, run

    cfg = compose_config(
        [*CASE, "trainer.precision=bf16", "trainer.cuda_graphs=true", "trainer.max_iters=10"]
    )
    run(cfg, tmp_path)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["fast_path"]["cuda_graphs"] is True and env["fast_path"]["fused_optimizer"] is True
    cfg.trainer.cuda_graphs = "auto"  # a setting a resume may change: auto then reads the record
    resumed = Trainer(cfg, tmp_path, resume=True)
    assert resumed.parts.cuda_graphs and resumed.parts.fast_path.chosen_by == "recorded"
