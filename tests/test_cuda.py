"""The engine on an NVIDIA GPU: autocast, channels-last, torch.compile, exact resume, NCCL DDP.

Marked ``cuda``: the default ``pytest`` deselects them (pyproject.toml), ``pytest -m cuda`` runs them,
and so does the prepared GPU check (``benchmarks/gpu_check.sh``). Without a GPU they are skipped, unless
``CNNBENCH_REQUIRE_CUDA=1`` (the GPU check sets it): then a missing GPU fails them instead of hiding
(tests/conftest.py, for every cuda-marked test; it also sets cuBLAS's deterministic workspace).

Each test builds the engine's own parts (``build_parts``, the step ``TrainStep``, ``train.run``), as
`cnnbench train` does, with small nets (depth 8 has ResNet-20's convolution shapes, one block per stage).
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import CUBLAS_DETERMINISTIC
from test_resume import ITERS, assert_same_run, checkpoint_of, metrics_of

from cnnbench.commands.bench import compose_config
from cnnbench.core.distributed import DistContext, shutdown
from cnnbench.engine.parts import Parts, build_parts
from cnnbench.engine.step import TrainStep, evaluate

pytestmark = pytest.mark.cuda  # skipped without a GPU, or failed if one is required: tests/conftest.py

# Explicit precision, layout and compile: no fast-path probe, and each test says what it exercises.
CUDA = ["trainer.device=cuda", "trainer.compile=false", "trainer.channels_last=true"]
# The plain eager update (no CUDA graph, torch's default optimizer): what DDP runs, for exact comparisons.
EAGER = ["trainer.cuda_graphs=false", "trainer.fused_optimizer=false"]
DIGITS = ["data=digits", "model=resnet", "depth=8", "trainer.batch_size=128", "trainer.max_iters=200"]


def parts_for(*overrides: str, dist: DistContext | None = None) -> Parts:
    return build_parts(compose_config([*DIGITS, *CUDA, *overrides]), dist=dist)


def train(parts: Parts, steps: int) -> TrainStep:
    step = TrainStep(parts)
    for iteration in range(steps):
        step(iteration)
    return step


def mean_loss(step: TrainStep) -> float:
    return float(step.window_loss) / step.window_iters


@pytest.fixture
def deterministic(monkeypatch):
    """Bitwise-repeatable CUDA kernels within this process: cuDNN's deterministic algorithms and cuBLAS's
    fixed workspace (which tests/conftest.py sets before CUDA starts: cuBLAS reads it only then);
    warn_only: a kernel without a deterministic version warns instead of failing."""
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in CUBLAS_DETERMINISTIC
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


# ----- autocast --------------------------------------------------------------------------------------
def test_bf16_autocast_trains_in_bf16_with_fp32_weights_and_follows_fp32():
    parts = parts_for("trainer.precision=bf16")
    seen: list[torch.dtype] = []
    first_conv = next(m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    before = first_conv.weight.detach().clone()
    step = train(parts, 30)
    hook.remove()
    assert parts.fast_path.precision == "bf16" and parts.scaler is None
    assert set(seen) == {torch.bfloat16}  # the convolutions ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in parts.model.parameters())  # ... on fp32 weights
    assert first_conv.weight.grad is None or first_conv.weight.grad.dtype == torch.float32
    assert not torch.equal(before, first_conv.weight)
    assert int(step.first_bad_iter) == -1

    fp32 = train(parts_for("trainer.precision=fp32"), 30)  # same seed: same weights and batches
    assert abs(mean_loss(step) - mean_loss(fp32)) < 0.15, (mean_loss(step), mean_loss(fp32))


def test_fp16_autocast_scales_the_loss():
    parts = parts_for("trainer.precision=fp16")
    step = train(parts, 20)
    assert parts.scaler is not None and parts.scaler.is_enabled()
    assert torch.isfinite(torch.tensor(parts.scaler.get_scale()))
    assert int(step.first_bad_iter) == -1 and mean_loss(step) < 2.5


# ----- memory layout ---------------------------------------------------------------------------------
def test_channels_last_weights_batches_and_same_outputs_as_nchw():
    cl = parts_for("trainer.precision=fp32", "trainer.channels_last=true")
    nchw = parts_for("trainer.precision=fp32", "trainer.channels_last=false")
    conv = next(m for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images, _ = cl.batches.next()
    x = cl.augment(images)
    assert x.is_contiguous(memory_format=torch.channels_last)
    cl.model.eval()
    nchw.model.eval()
    with torch.no_grad():  # same seed, same weights: only the layout differs (cuDNN may use TF32)
        torch.testing.assert_close(cl.model(x), nchw.model(x.contiguous()), rtol=1e-2, atol=1e-2)


# ----- torch.compile ---------------------------------------------------------------------------------
def test_compiled_model_trains_and_matches_eager():
    """The trainer's own compile (``trainer.compile=true``: the fast path's mode) on ResNet-20's
    convolution shapes at batch 128, so a later ResNet-20 benchmark finds inductor's caches warm."""
    parts = parts_for("trainer.precision=bf16", "trainer.compile=true")
    assert parts.fast_path.compile
    assert isinstance(parts.train_forward, torch._dynamo.eval_frame.OptimizedModule)
    with parts.compile_fallback():
        step = train(parts, 10)
        assert int(step.first_bad_iter) == -1 and mean_loss(step) < 2.5
        images, labels = parts.data.eval_sets["test"]
        loss, error = evaluate(parts, images, labels)
        parts.model.eval()
        x = parts.augment(images[:128])
        with torch.no_grad(), parts.autocast():
            compiled, eager = parts.eval_forward(x).float(), parts.model(x).float()
    assert 0.0 <= error <= 1.0 and loss == loss
    torch.testing.assert_close(compiled, eager, rtol=5e-2, atol=5e-2)


# ----- checkpoint and resume -------------------------------------------------------------------------
# The update variants a run can take on CUDA (fastpath/choice.py), each asked for explicitly: torch's
# default (foreach) optimizer, the fused one, and the fused one captured as a CUDA graph.
UPDATES = {
    "foreach": ["trainer.fused_optimizer=false", "trainer.cuda_graphs=false"],
    "fused": ["trainer.fused_optimizer=true", "trainer.cuda_graphs=false"],
    "fused+graphs": ["trainer.fused_optimizer=true", "trainer.cuda_graphs=true"],
}
RESUMES = [
    pytest.param(precision, update, id=f"{precision}-{update}")
    for precision in ("bf16", "fp16")
    for update in UPDATES
    if not (precision == "fp16" and update == "fused+graphs")  # refused: fp16's GradScaler syncs
]


def _interrupted_and_resumed(tmp_path: Path, monkeypatch, *overrides: str) -> tuple[Path, Path]:
    """The uninterrupted run (``reference``) and the same run stopped by Ctrl-C right after iteration 20
    (a checkpoint and an evaluation) then resumed (``run``), in this process: the same cuDNN algorithms."""
    from cnnbench.engine.trainer import run

    cfg = compose_config(
        [
            *DIGITS[:-1],
            *CUDA,
            *overrides,
            "trainer.batch_size=32",
            f"trainer.max_iters={ITERS}",
            "trainer.log_every=5",
            "trainer.eval_every=10",
            "trainer.ckpt_every=10",
        ]
    )
    run(cfg, tmp_path / "reference")
    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == 20:
            signal.raise_signal(signal.SIGINT)  # as if it came mid-step

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    with pytest.raises(SystemExit):
        run(cfg, tmp_path / "run")
    assert metrics_of(tmp_path / "run")["iteration"] == checkpoint_of(tmp_path / "run")["iteration"] == 20
    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path / "run", resume=True)
    return tmp_path / "run", tmp_path / "reference"


def test_ctrl_c_then_resume_on_cuda_is_exact(tmp_path, monkeypatch, deterministic):
    """Stopped at iteration 20 and resumed, with the fast path's own choice of update: the same metrics,
    weights, momentum and TensorBoard curves as the uninterrupted run, bit for bit (CUDA RNG, sampler and
    augmentation state restored)."""
    run, reference = _interrupted_and_resumed(tmp_path, monkeypatch, "trainer.precision=bf16")
    assert_same_run(run, reference)
    assert "cuda" in checkpoint_of(reference)["rng"]


@pytest.mark.parametrize(("precision", "update"), RESUMES)
def test_resume_is_exact_under_each_update_and_precision(
    precision: str, update: str, tmp_path, monkeypatch, deterministic
):
    """The same, for each update variant and autocast precision: fp16 also restores its GradScaler (the
    loss scale and its growth tracker), a CUDA graph is captured anew after the resume."""
    run, reference = _interrupted_and_resumed(
        tmp_path, monkeypatch, f"trainer.precision={precision}", *UPDATES[update]
    )
    assert_same_run(run, reference)
    ours, theirs = checkpoint_of(run), checkpoint_of(reference)
    ours["fast_path"].pop("chosen_by")  # "recorded" after the resume, "config" before
    theirs["fast_path"].pop("chosen_by")
    assert ours["fast_path"] == theirs["fast_path"]  # the resume trained the same variant
    assert theirs["fast_path"]["precision"] == precision
    flags = (theirs["fast_path"]["fused_optimizer"], theirs["fast_path"]["cuda_graphs"])
    assert flags == ("fused" in update, "graphs" in update)
    assert (ours["scaler"] is None) == (precision != "fp16")
    if precision == "fp16":
        assert ours["scaler"] == theirs["scaler"] and ours["scaler"]["scale"] > 0


# ----- DistributedDataParallel over NCCL -------------------------------------------------------------
@dataclass(frozen=True)
class OneRankDDP(DistContext):
    """A one-process launch that still takes the distributed path (cnnbench skips it for one rank)."""

    @property
    def enabled(self) -> bool:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_trains_exactly_as_a_single_process(monkeypatch, deterministic):
    """torch.distributed over NCCL with world size 1: the run's fast path broadcast to the ranks, the
    DDP-wrapped (SyncBatchNorm) model, the all-reduced gradients. One rank must train exactly as the
    plain model does: the same batches (its shard is the whole batch) and the same gradients (/1)."""
    import torch.distributed as dist

    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("CNNBENCH_DIST_BACKEND", "nccl")
    try:
        ddp = parts_for("trainer.precision=bf16", "trainer.sync_bn=true", *EAGER, dist=OneRankDDP())
        assert dist.is_initialized() and dist.get_backend() == "nccl"
        assert isinstance(ddp.train_forward, torch.nn.parallel.DistributedDataParallel)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.model.modules())
        ddp_step = train(ddp, 10)
        total = torch.ones((), device=ddp.device)
        dist.all_reduce(total)
        assert float(total) == 1.0
    finally:
        shutdown()
    single = parts_for("trainer.precision=bf16", *EAGER)
    single_step = train(single, 10)
    assert float(ddp_step.window_loss) == float(single_step.window_loss)
    for (name, a), b in zip(ddp.model.state_dict().items(), single.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
