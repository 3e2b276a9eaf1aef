"""The measured fast path: the decision on faked machines, the cache, explicit settings, resume and sweeps."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY
from fastpath_requests import NOT_FUSED, resolve

from cnnbench.core import cache
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath import choice, cuda, probe, workload
from cnnbench.fastpath import request as fastpath_request
from cnnbench.fastpath.choice import choose, choose_compile

CPU = torch.device("cpu")
# Faked timings (ms per ResNet-20 update) of three kinds of machine seen by this project.
BF16_WINS = {"fp32/channels_last": 310.0, "fp32/nchw": 300.0, "bf16/channels_last": 45.0, "bf16/nchw": 60.0}
FP32_WINS = {"fp32/channels_last": 195.0, "fp32/nchw": 189.0, "bf16/channels_last": 268.0, "bf16/nchw": 262.0}
NEAR_TIE = {"fp32/channels_last": 100.0, "fp32/nchw": 98.5, "bf16/channels_last": 97.0, "bf16/nchw": 99.0}


@pytest.mark.parametrize(
    ("timings", "expected"),
    [(BF16_WINS, "bf16/channels_last"), (FP32_WINS, "fp32/nchw"), (NEAR_TIE, "fp32/nchw")],
)
def test_the_choice_is_within_5_percent_of_the_fastest_and_prefers_fp32_on_a_tie(timings, expected):
    chosen = choose(timings)
    assert chosen == expected
    assert timings[chosen] <= 1.05 * min(timings.values())


def test_compile_only_when_it_measured_faster():
    assert choose_compile(eager_ms=100.0, compiled_ms=80.0) is True
    assert choose_compile(eager_ms=100.0, compiled_ms=99.0) is False  # within noise: not worth its start-up
    assert choose_compile(eager_ms=100.0, compiled_ms=130.0) is False


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A machine whose candidates take the given timings; counts the measurements."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    state = {"timings": BF16_WINS, "measured": 0, "compile_measured": 0, "compiled_ms": 50.0}

    def measure(device, **kwargs):
        state["measured"] += 1
        return dict(state["timings"])

    def measure_compile(device, precision, channels_last, **kwargs):
        state["compile_measured"] += 1
        return {"eager_ms": 100.0, "compiled_ms": state["compiled_ms"], "compile_s": 1.0}

    monkeypatch.setattr(probe, "measure", measure)
    monkeypatch.setattr(probe, "measure_compile", measure_compile)
    return state


AUTO = {"precision": "auto", "channels_last": "auto", "compile": "auto", "max_iters": 100}


def test_auto_follows_the_measurement_and_is_cached_per_machine(fake_machine, monkeypatch):
    first = resolve(AUTO, CPU)
    assert (first.precision, first.channels_last, first.compile) == ("bf16", True, False)
    assert first.chosen_by == "probe" and fake_machine["measured"] == 1
    fake_machine["timings"] = FP32_WINS  # the same machine: the cache answers, no new measurement
    again = resolve(AUTO, CPU)
    assert (again.precision, again.chosen_by, fake_machine["measured"]) == ("bf16", "cache", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # another thread count: another machine key
    other = resolve(AUTO, CPU)
    assert (other.precision, other.channels_last, fake_machine["measured"]) == ("fp32", False, 2)


def test_explicit_settings_win_and_need_no_probe(fake_machine):
    explicit = resolve({"precision": "fp32", "channels_last": False, "compile": False}, CPU)
    assert (explicit.precision, explicit.channels_last, explicit.compile) == ("fp32", False, False)
    assert explicit.chosen_by == "config" and fake_machine["measured"] == 0
    # Precision and layout fixed, compile left to auto: a short run is not compiled, nothing is measured.
    layout_fixed = resolve({**AUTO, "precision": "fp32", "channels_last": False}, CPU)
    chosen = (layout_fixed.precision, layout_fixed.channels_last, layout_fixed.compile)
    assert chosen == ("fp32", False, False)
    assert layout_fixed.chosen_by == "config" and fake_machine["measured"] == 0
    # One fixed, one auto: the fastest measured layout for the fixed precision.
    half = resolve({**AUTO, "precision": "fp32"}, CPU)
    assert (half.precision, half.channels_last) == ("fp32", False)


def test_compile_is_measured_once_and_only_for_long_cpu_runs(fake_machine):
    assert resolve(AUTO, CPU).compile is False and fake_machine["compile_measured"] == 0
    long_run = {**AUTO, "max_iters": 64000}
    assert resolve(long_run, CPU).compile is True and fake_machine["compile_measured"] == 1
    assert resolve(long_run, CPU).compile is True and fake_machine["compile_measured"] == 1  # cached


def test_a_resume_keeps_the_recorded_settings(fake_machine):
    recorded = {"precision": "fp32", "channels_last": False, "compile": False}
    kept = resolve(AUTO, CPU, recorded=recorded)
    assert (kept.precision, kept.channels_last, kept.chosen_by) == ("fp32", False, "recorded")
    assert fake_machine["measured"] == 0


def test_the_jobs_of_a_sweep_share_the_first_jobs_choice(fake_machine, tmp_path, monkeypatch):
    record = tmp_path / "sweep" / "fastpath.json"
    first = resolve(AUTO, CPU, sweep_record=record)
    assert json.loads(record.read_text())["precision"] == first.precision == "bf16"
    # Another job of the sweep on a machine (or thread count) that would choose fp32 still uses bf16.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    fake_machine["timings"] = FP32_WINS
    second = resolve(AUTO, CPU, sweep_record=record)
    assert (second.precision, second.channels_last) == ("bf16", True)


def test_bad_values_are_refused():
    with pytest.raises(CnnbenchError, match="channels_last"):
        resolve({**AUTO, "channels_last": "sometimes"}, CPU)
    with pytest.raises(CnnbenchError, match="compile"):
        resolve({**AUTO, "compile": "yes"}, CPU)


def test_a_run_records_its_fast_path_and_a_resume_reuses_it(fake_machine, tmp_path):
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.state import recorded_fast_path
    from cnnbench.engine.trainer import Trainer, run

    cfg = compose_config([*TINY, "trainer.max_iters=10"])
    run(cfg, tmp_path)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["fast_path"]["precision"] == "bf16" and env["fast_path"]["chosen_by"] == "probe"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert recorded_fast_path(checkpoint, env)["precision"] == "bf16"
    fake_machine["timings"] = FP32_WINS
    cache.cache_dir().joinpath(choice.CACHE_FILE).unlink()  # a probe now would say fp32
    resumed = Trainer(cfg, tmp_path, resume=True)
    assert resumed.parts.fast_path.precision == "bf16" and resumed.parts.fast_path.chosen_by == "recorded"
    assert fake_machine["measured"] == 1


def test_the_real_probe_measures_every_candidate_within_its_budget(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    timings = workload.measure(CPU, budget_s=0.0, steps=1)  # one round: the real step, the real models
    assert set(timings) == set(workload.candidates(CPU)) and all(ms > 0 for ms in timings.values())
    assert choose(timings) in timings


# ----- the GPU fast path: update variants, CUDA graphs, fused optimizer (decided on faked GPUs) ------
CUDA = torch.device("cuda")  # never touched: every measurement below is faked
CUDA_PRECISION = {  # bf16 wins the precision/layout stage on both faked GPUs
    "fp32/channels_last": 9.0,
    "fp32/nchw": 9.5,
    "fp16/channels_last": 5.2,
    "fp16/nchw": 6.0,
    "bf16/channels_last": 5.0,
    "bf16/nchw": 5.9,
}
# ms per ResNet-20 update: a GPU where launches dominate (the graph wins), and one where they do not.
GRAPHS_WIN = {
    "eager/foreach": 6.0,
    "eager/fused": 5.0,
    "eager/fused+graphs": 1.5,
    "compiled/foreach": 5.5,
    "compiled/fused": 4.6,
    "compiled/fused+graphs": 1.2,
}
GRAPHS_LOSE = {
    "eager/foreach": 20.0,
    "eager/fused": 18.0,
    "eager/fused+graphs": 18.3,  # within 3% of fused: the simpler one wins
    "compiled/foreach": 17.0,
    "compiled/fused": 15.0,
    "compiled/fused+graphs": 15.2,
}


def test_the_update_variant_is_the_fastest_the_run_repays_and_the_simplest_on_a_tie():
    from cnnbench.fastpath.choice import choose_variant

    uncompiled = {k: v for k, v in GRAPHS_WIN.items() if k.startswith("eager")}
    assert choose_variant(uncompiled) == "eager/fused+graphs"
    assert choose_variant({k: v for k, v in GRAPHS_LOSE.items() if k.startswith("eager")}) == "eager/fused"
    # Compiling gains 0.3 ms a step over the graph: 64k iterations repay 19 s of compilation, 500 do not.
    assert choose_variant(GRAPHS_WIN, compile_s=15.0, max_iters=64000) == "compiled/fused+graphs"
    assert choose_variant(GRAPHS_WIN, compile_s=15.0, max_iters=500) == "eager/fused+graphs"
    assert choose_variant(GRAPHS_LOSE, compile_s=30.0, max_iters=64000) == "compiled/fused"  # 192 s gained
    # Only compiled variants (trainer.compile=true): nothing to repay against.
    assert choose_variant({"compiled/fused": 3.0, "compiled/foreach": 3.05}) == "compiled/foreach"


def test_explicit_settings_narrow_the_variants():
    from cnnbench.fastpath.choice import allowed_variants

    def names(*args, **kwargs):
        return sorted(v.name for v in allowed_variants(*args, **kwargs))

    assert names(None, None, None, consider_compile=False) == [
        "eager/foreach",
        "eager/fused",
        "eager/fused+graphs",
    ]
    assert names(None, False, None, consider_compile=False) == ["eager/foreach", "eager/fused"]
    assert names(None, None, False, consider_compile=True) == ["compiled/foreach", "eager/foreach"]
    assert names(True, True, None, consider_compile=False) == ["compiled/fused+graphs"]
    assert names(None, None, None, consider_compile=False, fused_ok=False, graphs_ok=False) == [
        "eager/foreach"
    ]


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """A CUDA machine with faked timings: precision/layout candidates, then the update variants."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    state = {"variants": GRAPHS_WIN, "compile_s": 15.0, "measured": 0, "asked": []}

    def machine_key(device):
        return {
            "torch": torch.__version__,
            "device": device.type,
            "probe": choice.PROBE_VERSION,
            "gpu": "H",
        }

    def measure_variants(device, precision, channels_last, names, compile_mode, **kwargs):
        state["measured"] += 1
        state["asked"].append((precision, channels_last, sorted(names), compile_mode))
        return {"timings_ms": {n: state["variants"][n] for n in names}, "compile_s": state["compile_s"]}

    monkeypatch.setattr(probe, "machine_key", machine_key)
    monkeypatch.setattr(cuda, "machine_key", machine_key)
    monkeypatch.setattr(fastpath_request, "resolve_precision", lambda name, device: name)
    monkeypatch.setattr(probe, "measure", lambda device, **kwargs: dict(CUDA_PRECISION))
    monkeypatch.setattr(cuda, "measure_variants", measure_variants)
    return state


def test_on_a_gpu_where_graphs_win_auto_captures_the_update_with_the_fused_optimizer(fake_gpu):
    short = resolve(AUTO, CUDA)
    assert (short.precision, short.channels_last) == ("bf16", True)
    assert (short.compile, short.cuda_graphs, short.fused_optimizer) == (False, True, True)
    assert short.chosen_by == "probe" and short.variant_timings_ms["eager/fused+graphs"] == 1.5
    # A short run does not measure (or pay for) compiling; the measured variants are cached per machine.
    assert fake_gpu["asked"] == [
        ("bf16", True, ["eager/foreach", "eager/fused", "eager/fused+graphs"], "default")
    ]
    assert resolve(AUTO, CUDA).cuda_graphs and fake_gpu["measured"] == 1
    # The paper's 64k iterations repay the compilation: compiled, and still captured.
    long_run = resolve({**AUTO, "max_iters": 64000}, CUDA)
    assert (long_run.compile, long_run.cuda_graphs, long_run.compile_mode) == (True, True, "default")
    assert choice.FastPath(**long_run.record()) == long_run  # the record rebuilds the same choice


def test_on_a_gpu_where_graphs_lose_auto_keeps_the_eager_fused_update(fake_gpu):
    fake_gpu["variants"] = GRAPHS_LOSE
    chosen = resolve(AUTO, CUDA)
    assert (chosen.compile, chosen.cuda_graphs, chosen.fused_optimizer) == (False, False, True)
    long_run = resolve({**AUTO, "max_iters": 64000}, CUDA)
    assert (long_run.compile, long_run.cuda_graphs, long_run.fused_optimizer) == (True, False, True)


def test_on_a_gpu_explicit_graph_settings_win(fake_gpu):
    off = resolve({**AUTO, "cuda_graphs": False}, CUDA)
    assert not off.cuda_graphs and "eager/fused+graphs" not in fake_gpu["asked"][-1][2]
    forced = resolve({**AUTO, "cuda_graphs": True, "compile": False}, CUDA)
    assert forced.cuda_graphs and forced.fused_optimizer
    fake_gpu["variants"] = GRAPHS_LOSE
    foreach = resolve({**AUTO, "fused_optimizer": False}, CUDA)
    assert (foreach.fused_optimizer, foreach.cuda_graphs) == (False, False)
    # Nothing left to choose: no measurement at all.
    measured = fake_gpu["measured"]
    fixed = resolve(
        {
            **AUTO,
            "precision": "bf16",
            "channels_last": True,
            "compile": False,
            "cuda_graphs": True,
            "fused_optimizer": True,
        },
        CUDA,
    )
    assert fixed.chosen_by == "config" and fixed.cuda_graphs and fake_gpu["measured"] == measured
    # A graph with fp16 (GradScaler), or where the run cannot be captured, is refused with the reason.
    with pytest.raises(CnnbenchError, match="fp16"):
        resolve({**AUTO, "precision": "fp16", "cuda_graphs": True}, CUDA)
    with pytest.raises(CnnbenchError, match="one process"):
        resolve({**AUTO, "cuda_graphs": True}, CUDA, distributed=True)
    with pytest.raises(CnnbenchError, match="fused"):
        resolve({**AUTO, "cuda_graphs": True, "fused_optimizer": False}, CUDA)
    with pytest.raises(CnnbenchError, match="Inductor's own"):
        resolve({**AUTO, "cuda_graphs": True, "compile": True, "compile_mode": "reduce-overhead"}, CUDA)
    # Where the run cannot be captured, auto never picks a graph (and the optimizer without a fused
    # implementation stays as it is).
    assert not resolve(AUTO, CUDA, distributed=True).cuda_graphs
    plain = resolve(AUTO, CUDA, optimizer=NOT_FUSED)
    assert (plain.fused_optimizer, plain.cuda_graphs) == (False, False)


def test_a_gpu_resume_reuses_the_recorded_graph_choice_and_old_records_read_as_off(fake_gpu):
    recorded = {**resolve(AUTO, CUDA).record()}
    measured = fake_gpu["measured"]
    fake_gpu["variants"] = GRAPHS_LOSE  # a probe now would say no graph
    kept = resolve(AUTO, CUDA, recorded=recorded)
    assert (kept.cuda_graphs, kept.fused_optimizer, kept.chosen_by) == (True, True, "recorded")
    old = resolve(AUTO, CUDA, recorded={"precision": "bf16", "channels_last": True, "compile": True})
    assert (old.cuda_graphs, old.fused_optimizer, old.compile_mode) == (
        False,
        False,
        "max-autotune-no-cudagraphs",
    )
    assert fake_gpu["measured"] == measured
    # Continued on a CPU: no graph there (an explicit setting still wins over the record).
    on_cpu = resolve(AUTO, CPU, recorded=recorded)
    assert not on_cpu.cuda_graphs
    assert resolve({**AUTO, "cuda_graphs": False}, CUDA, recorded=recorded).cuda_graphs is False


def test_the_jobs_of_a_gpu_sweep_share_the_graph_choice(fake_gpu, tmp_path):
    record = tmp_path / "sweep" / "fastpath.json"
    first = resolve(AUTO, CUDA, sweep_record=record)
    fake_gpu["variants"] = GRAPHS_LOSE
    cache.cache_dir().joinpath(choice.CACHE_FILE).unlink()
    second = resolve(AUTO, CUDA, sweep_record=record)
    assert first.cuda_graphs and second.cuda_graphs and second.chosen_by == "sweep"


def test_the_cpu_default_stays_foreach_without_graphs_and_graphs_are_refused_there(fake_machine):
    chosen = resolve(AUTO, CPU)
    assert (chosen.cuda_graphs, chosen.fused_optimizer) == (False, False)
    assert resolve({**AUTO, "fused_optimizer": True}, CPU).fused_optimizer is True
    with pytest.raises(CnnbenchError, match="CUDA GPU"):
        resolve({**AUTO, "cuda_graphs": True}, CPU)
    with pytest.raises(CnnbenchError, match="cuda_graphs"):
        resolve({**AUTO, "cuda_graphs": "maybe"}, CPU)
    with pytest.raises(CnnbenchError, match="compile_mode"):
        resolve({**AUTO, "compile_mode": "fastest"}, CPU)


# ----- fused SGD, the lr tensor and the captured-update wiring, on the CPU --------------------------
def _sgd(model, fused: bool, lr=0.1):
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, fused=True if fused else None
    )


def test_fused_and_foreach_sgd_give_the_same_weights_within_tolerance():
    from cnnbench.models import build_model

    torch.manual_seed(0)
    foreach_model = build_model("resnet", depth=8, num_classes=10)
    fused_model = build_model("resnet", depth=8, num_classes=10)
    fused_model.load_state_dict(foreach_model.state_dict())
    optimizers = [_sgd(foreach_model, fused=False), _sgd(fused_model, fused=True)]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        images = torch.randn(16, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (16,), generator=generator)
        for model, optimizer in zip((foreach_model, fused_model), optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    for a, b in zip(foreach_model.parameters(), fused_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_tensor_lr_is_filled_in_place_and_checkpoints_load_both_ways():
    from cnnbench.core.optim import build_optimizer, set_lr
    from cnnbench.models import build_model

    cfg = {"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    model = build_model("plain", depth=8)
    graphed = build_optimizer(model, cfg, fused=True, lr_tensor=True)
    lr = graphed.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32 and graphed.param_groups[0]["fused"]
    set_lr(graphed, 0.05)
    assert graphed.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.05)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    graphed.step()
    saved = graphed.state_dict()
    # Saved as a float, as every checkpoint before tensor lrs: loads with weights_only, in old code too.
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.05) and isinstance(
        saved["param_groups"][0]["lr"], float
    )
    assert graphed.param_groups[0]["lr"] is lr  # the live group keeps its tensor

    # A checkpoint of the default optimizer (float lr, foreach) into a tensor-lr fused one, and back.
    default = build_optimizer(model, cfg)
    set_lr(default, 0.02)
    graphed.load_state_dict(default.state_dict())
    group = graphed.param_groups[0]
    assert group["lr"] is lr and lr.item() == pytest.approx(0.02) and group["fused"] is True
    default.load_state_dict(saved)
    assert default.param_groups[0]["lr"] == pytest.approx(0.05) and not default.param_groups[0]["fused"]
    assert not isinstance(default.param_groups[0]["lr"], torch.Tensor)


class EagerGraph:
    """``GraphedUpdate``'s interface run eagerly: the CPU stand-in for a captured CUDA graph."""

    def __init__(self, update, warmup: int = 3) -> None:
        self.update, self.calls, self.captures = update, 0, 0

    def __call__(self, *inputs):
        self.calls += 1
        return self.update(*inputs)


GRAPH_CASE = [
    *TINY,
    "trainer.precision=fp32",
    "trainer.channels_last=true",
    "trainer.compile=false",
    "trainer.fused_optimizer=true",
    "schedule=cosine",  # the lr changes at every step
    "trainer.max_iters=8",
    "trainer.label_smoothing=0.1",
    "trainer.ema_decay=0.9",
    "augment.mixup=0.2",
]


def _parts(monkeypatch, overrides, graphed: bool):
    """Parts for ``overrides``; ``graphed``: wired as trainer.cuda_graphs wires them (tensor lr, the
    captured-update closures), with the graph run eagerly (EagerGraph)."""
    import dataclasses

    from cnnbench.commands.bench import compose_config
    from cnnbench.engine import parts as parts_module
    from cnnbench.engine import step as step_module

    real = parts_module.resolve_fast_path

    def as_if_graphed(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), cuda_graphs=graphed)

    monkeypatch.setattr(parts_module, "resolve_fast_path", as_if_graphed)
    monkeypatch.setattr(step_module, "GraphedUpdate", EagerGraph)
    return parts_module.build_parts(compose_config(overrides))


def test_the_captured_update_wiring_trains_like_the_eager_update(monkeypatch):
    from cnnbench.engine.step import TrainStep

    eager_parts, graph_parts = (_parts(monkeypatch, GRAPH_CASE, graphed=g) for g in (False, True))
    eager, graphed = TrainStep(eager_parts), TrainStep(graph_parts)
    lr = graph_parts.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and not isinstance(
        eager_parts.optimizer.param_groups[0]["lr"], torch.Tensor
    )
    for it in range(8):
        eager(it)
        graphed(it)
        # The schedule's value reached the optimizer through the same tensor (no new one, no recapture).
        assert graph_parts.optimizer.param_groups[0]["lr"] is lr
        assert lr.item() == pytest.approx(graph_parts.lr_at(it), rel=1e-6)
    assert graphed.graphs["mixed"].calls == 8 and "plain" not in graphed.graphs
    # A float32 lr instead of a Python float: the same training within rounding.
    for a, b in zip(
        eager_parts.model.state_dict().values(), graph_parts.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eager.window_loss, graphed.window_loss, rtol=1e-5, atol=1e-6)


def test_a_tensor_lr_run_resumes_exactly_and_continues_a_checkpoint_without_one(monkeypatch, tmp_path):
    from cnnbench.engine.state import RunState, checkpoint_state, restore
    from cnnbench.engine.step import TrainStep

    def checkpoint(parts, step, iteration):
        path = tmp_path / f"ckpt{iteration}.pt"
        torch.save(checkpoint_state(parts, step, RunState(iteration=iteration)), path)
        return torch.load(path, weights_only=True)

    straight_parts = _parts(monkeypatch, GRAPH_CASE, graphed=True)
    straight = TrainStep(straight_parts)
    for it in range(6):
        straight(it)
    first_parts = _parts(monkeypatch, GRAPH_CASE, graphed=True)
    first = TrainStep(first_parts)
    for it in range(3):
        first(it)
    saved = checkpoint(first_parts, first, 3)
    assert isinstance(saved["optimizer"]["param_groups"][0]["lr"], float)
    resumed_parts = _parts(monkeypatch, GRAPH_CASE, graphed=True)
    resumed = TrainStep(resumed_parts)
    lr = resumed_parts.optimizer.param_groups[0]["lr"]
    state = restore(resumed_parts, resumed, saved, tmp_path)
    assert resumed_parts.optimizer.param_groups[0]["lr"] is lr  # the tensor a graph would read, kept
    for it in range(state.iteration, 6):
        resumed(it)
    for key, value in straight_parts.model.state_dict().items():
        assert torch.equal(value, resumed_parts.model.state_dict()[key]), key

    # A checkpoint written by an eager run (float lr, foreach, as before this change) continues with the
    # tensor lr and the fused optimizer, and vice versa.
    eager_parts = _parts(monkeypatch, [*GRAPH_CASE, "trainer.fused_optimizer=false"], graphed=False)
    eager = TrainStep(eager_parts)
    eager(0)
    old = checkpoint(eager_parts, eager, 1)
    assert old["optimizer"]["param_groups"][0]["fused"] is None
    into_graph_parts = _parts(monkeypatch, GRAPH_CASE, graphed=True)
    into_graph = TrainStep(into_graph_parts)
    lr = into_graph_parts.optimizer.param_groups[0]["lr"]
    restore(into_graph_parts, into_graph, old, tmp_path)
    group = into_graph_parts.optimizer.param_groups[0]
    assert group["lr"] is lr and group["fused"] is True
    into_graph(1)
    back = _parts(monkeypatch, [*GRAPH_CASE, "trainer.fused_optimizer=false"], graphed=False)
    restore(back, TrainStep(back), saved, tmp_path)
    assert back.optimizer.param_groups[0]["fused"] is None
    assert not isinstance(back.optimizer.param_groups[0]["lr"], torch.Tensor)


# ----- no host sync per step ------------------------------------------------------------------------
HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


def test_a_training_step_never_reads_a_tensor_back_to_the_host(monkeypatch):
    """Counts every way a tensor's value reaches Python during non-logging steps (on a GPU each is a
    sync); tests/test_cuda_fastpath.py asks CUDA's sync debug mode the same on a GPU."""
    from cnnbench.engine.step import TrainStep

    overrides = [
        *GRAPH_CASE,
        "trainer.fused_optimizer=false",
        "augment.cutmix=1.0",
        "trainer.log_grad_every=2",
    ]
    parts = _parts(monkeypatch, overrides, graphed=False)
    step = TrainStep(parts)
    step(0)  # the EMA's first update reads its counter once (then keeps a host copy)
    counts = dict.fromkeys(HOST_READS, 0)
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    bool(torch.ones(()).item() > 0) and bool(torch.ones(()))  # the counters see what a step would do
    assert counts["item"] == counts["__bool__"] == 1
    counts.update(item=0, __bool__=0)
    for it in range(1, 7):  # mixup/CutMix, label smoothing, EMA, gradient norms at 2, 4 and 6
        step(it)
    monkeypatch.undo()
    assert counts == dict.fromkeys(HOST_READS, 0)
    assert len(step.gradflow.pending) == 3  # measured on the device, to be read when the loop logs


def test_fastest_in_rounds_times_every_workload_in_each_round_and_keeps_the_minimum():
    from cnnbench.core.timing import fastest_in_rounds

    calls = {"a": 0, "b": 0}

    def counting(name):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    timings = fastest_in_rounds({"a": counting("a"), "b": counting("b")}, CPU, steps=3, budget_s=60.0)
    # An estimate step each, then the most rounds (5) the budget allows for near-free steps, 3 steps each.
    assert calls == {"a": 1 + 5 * 3, "b": 1 + 5 * 3}
    assert set(timings) == {"a", "b"} and all(ms >= 0 for ms in timings.values())
    assert fastest_in_rounds({"a": counting("a")}, CPU, steps=2, budget_s=0.0) and calls["a"] == 16 + 1 + 2
