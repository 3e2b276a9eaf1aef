"""``python -m benchmarks.gpu_check worker``: one training process of the jobs-per-GPU measurement (or
k models on k CUDA streams of one process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def worker(args: argparse.Namespace) -> int:
    """Build the parts, warm up, then train in the phases it belongs to (index < k), each phase started
    by the driver's ``start-<k>.json`` (a wall-clock time), for ``seconds``; ``--streams``: k models on
    their own CUDA streams in this one process instead, results printed as JSON."""
    import torch

    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.parts import build_parts
    from cnnbench.engine.step import TrainStep

    phases = [int(k) for k in args.phases.split(",")]
    count = max(phases) if args.streams else 1
    models = []
    for j in range(count):
        parts = build_parts(
            compose_config([*args.overrides, f"seed={j}"] if args.streams else args.overrides)
        )
        stream = torch.cuda.Stream(parts.device) if parts.device.type == "cuda" else None
        models.append((parts, TrainStep(parts), stream))
    device = models[0][0].device
    sync(device)  # the data and weights were made on the default stream: done before other streams use them
    counter = [0]

    def step(j: int) -> None:
        parts, train_step, stream = models[j]
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            train_step(counter[0])

    for _ in range(args.warmup):
        for j in range(count):
            step(j)
        counter[0] += 1
    sync(device)
    batch = models[0][0].batch_size
    if args.streams:
        print(
            json.dumps(
                {str(k): streams_window(step, k, args.seconds, batch, device, counter) for k in phases}
            )
        )
        return 0
    folder = Path(args.dir)
    ready = {"pid": os.getpid(), "device": str(device), "fast_path": models[0][0].fast_path.record()}
    (folder / f"ready-{args.index}.json").write_text(json.dumps(ready, default=str))
    for k in phases:
        if args.index >= k:
            continue
        t0 = wait_for_start(folder / f"start-{k}.json")
        time.sleep(max(t0 - time.time(), 0.0))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps, seconds = timed_window(lambda: step(0), args.seconds, device, counter)
        window = {
            "steps": steps,
            "seconds": seconds,
            "images": steps * batch,
            "peak_memory_mb": peak_mb(device),
        }
        (folder / f"result-{k}-{args.index}.json").write_text(json.dumps(window))
    return 0


def timed_window(
    step: Callable[[], None], seconds: float, device: Any, counter: list[int]
) -> tuple[int, float]:
    """Steps until ``seconds`` have passed, then a device sync: the work queued by then counts, and its
    time too."""
    start = time.perf_counter()
    end = start + seconds
    steps = 0
    while time.perf_counter() < end:
        step()
        counter[0] += 1
        steps += 1
    sync(device)
    return steps, time.perf_counter() - start


def streams_window(
    step: Callable[[int], None], k: int, seconds: float, batch: int, device: Any, counter: list[int]
) -> dict[str, Any]:
    def round_robin() -> None:
        for j in range(k):
            step(j)

    rounds, elapsed = timed_window(round_robin, seconds, device, counter)
    return {
        "img_per_s": rounds * k * batch / elapsed,
        "steps": rounds * k,
        "seconds": elapsed,
        "peak_memory_mb": peak_mb(device),
    }


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def wait_for_start(path: Path, timeout: float = 900.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return float(json.loads(path.read_text())["t0"])
        time.sleep(0.002)
    raise SystemExit(f"no {path.name} in {timeout:.0f} s")
