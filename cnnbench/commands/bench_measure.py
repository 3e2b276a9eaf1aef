"""`cnnbench bench`'s measurement: the engine's parts and step, the pure update, the input pipeline, the
gradient norms, the evaluation, the minimal loop and the DataLoader baseline, timed in interleaved rounds
(the protocol is described in ``cnnbench.commands.bench``)."""

from __future__ import annotations

import copy
import math
import resource
import sys
from collections.abc import Callable

import torch

from cnnbench.commands.bench_protocol import BenchProtocol
from cnnbench.commands.bench_result import BenchResult
from cnnbench.core.cpuload import OtherLoad
from cnnbench.core.timing import elapsed_s, median, ms_per_call
from cnnbench.fastpath.workload import matmul_peak_gflops

MIN_AUTO_ITERS, MAX_AUTO_ITERS = 3, 1000
MIN_INPUT_ITERS = 50  # the input pipeline alone is cheap: time more batches of it
WINDOW_NAMES = {
    "train_step_ms": "training loop",
    "pure_step_ms": "pure model step",
    "minimal_step_ms": "minimal loop",
}


def load_baseline():
    """The DataLoader baseline module (``cnnbench.commands.baseline``, shipped with the package)."""
    from cnnbench.commands import baseline

    return baseline


# ----- measurement helpers ------------------------------------------------------------------------
def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "rss"


def _auto_count(seconds_per_unit: float, window: float, lo: int, hi: int) -> int:
    return int(min(max(math.ceil(window / max(seconds_per_unit, 1e-9)), lo), hi))


# ----- the benchmark -------------------------------------------------------------------------------
def measure(
    cfg,
    with_baseline: bool = True,
    protocol: BenchProtocol | None = None,
    status: Callable[[str], None] = lambda message: None,
) -> BenchResult:
    """Run the benchmark for the composed config ``cfg`` under ``protocol`` (default ``BenchProtocol()``).

    The parts, the step and the evaluation are the engine's own (``cnnbench.engine``): what is timed
    here is what `cnnbench train` runs. Nothing is written to disk.
    """
    from cnnbench.engine.parts import build_parts
    from cnnbench.engine.step import TrainStep, evaluate
    from cnnbench.rundir.validate import check_config

    protocol = protocol or BenchProtocol()
    iters, warmup, repeats = protocol.iters, protocol.warmup, protocol.repeats
    window, eval_images = protocol.window, protocol.eval_images
    check_config(cfg)
    baseline_module = load_baseline() if with_baseline else None

    status("building the model and loading the data")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    parts = build_parts(cfg)
    device, batch_size = parts.device, parts.batch_size
    eval_batch_size = int(cfg.trainer.eval_batch_size)
    # Same architecture and initial weights for the baseline, copied before any step.
    baseline_model = copy.deepcopy(parts.model) if with_baseline else None

    step = TrainStep(parts)
    counter = iter(range(10**12))

    def train_step() -> None:
        step(next(counter))

    # The pure step: one resident, augmented batch through the same model/optimizer/precision.
    images, labels = parts.batches.next()
    pure_x, pure_y = parts.augment(images), labels

    def pure_step() -> None:
        step.update(pure_x, pure_y)

    def input_step() -> None:
        parts.augment(parts.batches.next()[0])

    def grad_norm_step() -> None:
        step.gradflow.measure().tolist()  # as the loop does it: measured, then read at a logging point

    test_images, test_labels = parts.data.eval_sets["test"]
    minimal = _build_minimal(cfg, parts)

    with parts.compile_fallback():
        # Warm-up (excluded): allocator, oneDNN/cuDNN algorithm choice, torch.compile.
        status(f"warming up ({warmup} steps)")
        step_times = [elapsed_s(train_step, 1, device) for _ in range(warmup)]
        for _ in range(warmup):
            pure_step()
            if minimal is not None:
                minimal.step()
        elapsed_s(input_step, 2, device)
        first = min(eval_batch_size, len(test_labels))
        eval_warm = [
            elapsed_s(lambda: evaluate(parts, test_images[:first], test_labels[:first]), 1, device)
            for _ in range(2)
        ]
        memory_mb, memory_kind = peak_memory_mb(device)  # before the baseline exists

        step_estimate = min(step_times[1:] or step_times)
        n_iters = iters or _auto_count(step_estimate, window, MIN_AUTO_ITERS, MAX_AUTO_ITERS)
        if eval_images is None:
            per_image = min(eval_warm) / first
            batches = _auto_count(per_image * eval_batch_size, window, 1, 10**9)
            n_eval = min(batches * eval_batch_size, len(test_labels))
        else:
            n_eval = min(eval_images, len(test_labels))
        eval_x, eval_y = test_images[:n_eval], test_labels[:n_eval]
        input_iters = max(n_iters, MIN_INPUT_ITERS)

        baseline = None
        if baseline_module is not None:
            status("building the DataLoader baseline")
            baseline = _build_baseline(baseline_module, cfg, parts, baseline_model)
            for _ in range(warmup):
                baseline.train_step()
            baseline.stop()

        samples: dict[str, list[float]] = {"train_step_ms": [], "pure_step_ms": [], "input_ms": []}
        samples["grad_norm_ms"] = []
        samples["eval_img_per_s"] = []
        samples["other_cpu_pct"] = []
        load = OtherLoad()  # measured over the train and pure windows, where only this process runs
        if baseline is not None:
            samples["baseline_step_ms"] = []
        if minimal is not None:
            samples["minimal_step_ms"] = []
        for r in range(repeats):
            tag = f"repeat {r + 1}/{repeats}, {n_iters} iterations"
            # The loop, the pure step and the minimal loop take turns going first (the order rotates), so
            # none always follows the same neighbour.
            timed = [("train_step_ms", train_step), ("pure_step_ms", pure_step)]
            timed += [("minimal_step_ms", minimal.step)] if minimal is not None else []
            load.start()
            for key, fn in timed[r % len(timed) :] + timed[: r % len(timed)]:
                status(f"{WINDOW_NAMES[key]} ({tag})")
                samples[key].append(ms_per_call(fn, n_iters, device))
            other = load.stop()
            if other is not None:
                samples["other_cpu_pct"].append(other)
            samples["input_ms"].append(ms_per_call(input_step, input_iters, device))
            samples["grad_norm_ms"].append(ms_per_call(grad_norm_step, input_iters, device))
            status(f"evaluation (repeat {r + 1}/{repeats}, {n_eval} images)")
            seconds = elapsed_s(lambda: evaluate(parts, eval_x, eval_y), 1, device)
            samples["eval_img_per_s"].append(n_eval / seconds)
            if baseline is not None:
                status(f"baseline ({tag})")
                baseline.train_step()  # a new epoch: its workers start (excluded, as the warm-up)
                seconds = elapsed_s(baseline.train_step, n_iters, device)
                samples["baseline_step_ms"].append(1e3 * seconds / n_iters)
                baseline.stop()

    status("counting FLOPs and measuring the matmul peak")
    step_gflop = train_step_gflop(parts.model, parts)
    peak = matmul_peak_gflops(device, parts.fast_path.precision)

    bad = int(step.first_bad_iter.item())
    if bad >= 0:
        status(f"warning: the training loss became non-finite at iteration {bad}")

    train_ms = median(samples["train_step_ms"])
    pure_ms = median(samples["pure_step_ms"])
    input_ms = median(samples["input_ms"])
    grad_ms = median(samples["grad_norm_ms"])
    log_grad_every = step.gradflow.every
    # The two loops cnnbench is compared with: their median step time (img/s, and its step time / ours).
    minimal_ms = median(samples["minimal_step_ms"]) if minimal is not None else None
    baseline_ms = median(samples["baseline_step_ms"]) if baseline is not None else None
    return BenchResult(
        model=str(cfg.model.name),
        depth=int(cfg.depth),
        params=parts.params,
        data=parts.data.name,
        synthetic=bool(parts.data.synthetic),
        train_images=len(parts.data.train_labels),
        test_images=len(test_labels),
        batch_size=batch_size,
        device=str(device),
        precision=parts.fast_path.precision,
        compiled=bool(parts.fast_path.compile),
        channels_last=parts.fast_path.memory_format == torch.channels_last,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        iters=n_iters,
        warmup=warmup,
        repeats=repeats,
        eval_images=n_eval,
        train_img_per_s=batch_size / (train_ms / 1e3),
        train_step_ms=train_ms,
        pure_step_ms=pure_ms,
        loop_overhead_pct=100.0 * (train_ms / pure_ms - 1.0),
        input_ms=input_ms,
        input_overhead_pct=100.0 * input_ms / pure_ms,
        grad_norm_ms=grad_ms,
        log_grad_every=log_grad_every,
        grad_norm_overhead_pct=100.0 * grad_ms / (log_grad_every * train_ms) if log_grad_every > 0 else 0.0,
        eval_img_per_s=median(samples["eval_img_per_s"]),
        step_gflop=step_gflop,
        achieved_gflops=step_gflop / (train_ms / 1e3),
        matmul_peak_gflops=peak,
        peak_fraction=step_gflop / (train_ms / 1e3) / peak,
        fast_path=parts.fast_path.record(),
        peak_memory_mb=memory_mb,
        peak_memory_kind=memory_kind,
        other_cpu_pct=load.percent(),
        minimal_train_img_per_s=None if minimal_ms is None else batch_size / (minimal_ms / 1e3),
        minimal_step_ms=minimal_ms,
        vs_minimal=None if minimal_ms is None else minimal_ms / train_ms,
        baseline_train_img_per_s=None if baseline_ms is None else batch_size / (baseline_ms / 1e3),
        baseline_step_ms=baseline_ms,
        speedup=None if baseline_ms is None else baseline_ms / train_ms,
        samples=samples,
    )


def train_step_gflop(model: torch.nn.Module, parts) -> float:
    """GFLOP of one training step's forward and backward (``torch.utils.flop_counter``), on a copy."""
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model).float().to(parts.device)
    images = parts.augment(parts.data.train_images[: parts.batch_size // parts.dist.world_size])
    with FlopCounterMode(display=False) as counter:
        clone(images.float()).float().logsumexp(1).sum().backward()
    return counter.get_total_flops() / 1e9


def _build_minimal(cfg, parts):
    """The minimal loop on the run's own training images, batch, precision and layout (None for the
    families it does not write out, or under torchrun)."""
    from cnnbench.commands.minimal_loop import FAMILIES, MinimalLoop

    options = {k: v for k, v in cfg.model.items() if k not in ("name", "default_depth")}
    plain_options = options.get("block", "basic") == "basic" and options.get("shortcut", "A") == "A"
    if cfg.model.name not in FAMILIES or not plain_options or parts.dist.world_size > 1:
        return None
    opt = cfg.optimizer
    return MinimalLoop(
        parts.data.train_images,
        parts.data.train_labels,
        model=str(cfg.model.name),
        depth=int(cfg.depth),
        batch_size=parts.batch_size,
        precision=parts.fast_path.precision,
        channels_last=parts.fast_path.memory_format == torch.channels_last,
        lr=float(opt.lr),
        momentum=float(opt.get("momentum", 0.9)),
        weight_decay=float(opt.get("weight_decay", 1e-4)),
        padding=int(cfg.augment.get("padding", 4) or 0),
        seed=int(cfg.seed),
        compile_mode=parts.fast_path.compile_mode if parts.fast_path.compile else None,
    )


def _build_baseline(module, cfg, parts, model):
    """The classic pipeline on the run's own uint8 training images (copied to the host)."""
    device = parts.device
    loader = module.make_loader(
        parts.data.train_images.cpu(),
        parts.data.train_labels.cpu(),
        parts.batch_size,
        seed=int(cfg.seed),
        pin_memory=device.type == "cuda",
    )
    model = model.to(memory_format=torch.contiguous_format).float()
    opt = cfg.optimizer
    return module.BaselineTrainer(
        model,
        loader,
        device,
        lr=float(opt.lr),
        momentum=float(opt.get("momentum", 0.9)),
        weight_decay=float(opt.get("weight_decay", 1e-4)),
    )
