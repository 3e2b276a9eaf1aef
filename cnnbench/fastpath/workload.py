"""The probe's reference workload and its timings: a fresh ResNet-20 at batch 128 running the real model
update (``update.step.model_step``, optionally fused or captured as a CUDA graph), each candidate's fastest
ms per update over interleaved rounds, eager against compiled, and the matmul peak bench compares with."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from cnnbench.core.compiling import compile_module
from cnnbench.core.device import autocast
from cnnbench.core.timing import fastest_in_rounds, median, ms_per_call
from cnnbench.fastpath.choice import (
    CPU_COMPILE_MODE,
    PROBE_BATCH,
    PROBE_BUDGET_S,
    PROBE_DEPTH,
    parse_candidate,
)
from cnnbench.fastpath.machine import candidates


def workload(
    device: torch.device,
    precision: str,
    channels_last: bool,
    compiled: bool = False,
    *,
    fused: bool = False,
    graphs: bool = False,
    compile_mode: str = CPU_COMPILE_MODE,
) -> Callable[[], object]:
    """A fresh ResNet-20 (same seed every time), its SGD, and one resident batch: a timed callable.

    ``fused``: SGD's fused implementation; ``graphs``: the update captured as a CUDA graph (after its
    eager warm-up calls), with the lr as a device tensor, as a run with ``trainer.cuda_graphs`` does.
    """
    from cnnbench.models import build_model
    from cnnbench.update.graphs import GraphedUpdate
    from cnnbench.update.step import model_step

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG
        torch.manual_seed(0)
        model = build_model("resnet", depth=PROBE_DEPTH, num_classes=10).to(device, memory_format=fmt)
    images = torch.randn(PROBE_BATCH, 3, 32, 32, generator=generator).to(device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (PROBE_BATCH,), generator=generator).to(device)
    lr: float | torch.Tensor = torch.tensor(0.01, device=device) if graphs else 0.01
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, fused=True if fused else None
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    forward = model
    if compiled:
        forward = compile_module(model, compile_mode, static_shapes=True)  # as a run's training step
    context = autocast(device, precision, cache=not graphs)
    if not graphs:
        return lambda: model_step(forward, optimizer, scaler, context, images, labels)
    graphed = GraphedUpdate(lambda x, y: model_step(forward, optimizer, scaler, context, x, y))
    return lambda: graphed(images, labels)


def measure(
    device: torch.device,
    budget_s: float = PROBE_BUDGET_S,
    steps: int = 2,
    rounds: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """The fastest ms per model update of each candidate over interleaved rounds (the order rotates);
    ``rounds``, when given, receives every round's ms per update of each candidate.

    Two warm-up steps each (oneDNN/cuDNN pick their kernels there), then as many rounds (1 to 5) as fit
    in ``budget_s`` seconds: a slow machine gets fewer rounds, never a longer probe. The minimum, not
    the median: other processes only ever make a window slower, so the fastest is the best estimate;
    whether the rounds agree enough to trust it is ``probe``'s question (``choice.noise_reasons``).
    """
    start = time.perf_counter()
    names = candidates(device)
    workloads = {name: workload(device, *parse_candidate(name)) for name in names}
    for step in workloads.values():
        step()
    left = budget_s - (time.perf_counter() - start)
    return fastest_in_rounds(workloads, device, steps, left, rounds=rounds)


def measure_compile(device: torch.device, precision: str, channels_last: bool, steps: int = 5) -> dict:
    eager = workload(device, precision, channels_last)
    compiled = workload(device, precision, channels_last, compiled=True)
    start = time.perf_counter()
    for _ in range(2):
        compiled()  # compilation happens here
    compile_s = time.perf_counter() - start
    eager()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(3):
        times["eager"].append(ms_per_call(eager, steps, device))
        times["compiled"].append(ms_per_call(compiled, steps, device))
    return {
        "eager_ms": median(times["eager"]),
        "compiled_ms": median(times["compiled"]),
        "compile_s": compile_s,
    }


def matmul_peak_gflops(device: torch.device, precision: str, size: int = 2048, reps: int = 10) -> float:
    """The measured matmul throughput in ``precision`` (GFLOP/s): the ceiling bench compares with.

    The best of ``reps`` after three warm-up products: on a shared or virtual machine single products
    vary by 2x (measured), and the best is what the hardware can do.
    """
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    for _ in range(3):
        a @ b
    ms = min(ms_per_call(lambda: a @ b, 1, device) for _ in range(reps))
    return 2 * size**3 / (ms / 1e3) / 1e9
