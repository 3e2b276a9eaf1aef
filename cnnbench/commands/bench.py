"""`cnnbench bench`: throughput of the real training loop, its overhead, memory, and a classic baseline.

What is measured, for the composed config (model, depth, batch size, precision, device, compile):

- ``train``: the engine's ``TrainStep`` back to back (sampling, on-device augmentation, forward,
  backward, optimizer step, device-side accumulators), synchronized only at the end of each window;
- ``pure``: forward + backward + optimizer step alone, on one resident, already augmented batch, with
  the same model, optimizer, precision and memory format; the loop overhead is
  ``train step time / pure step time - 1``;
- ``input``: the sampler and the augmentation alone (the part of the overhead that is not bookkeeping);
- ``grad_norm``: one gradient-flow measurement (per-stage/block gradient and weight norms, read back
  to the host), and its cost amortized over ``trainer.log_grad_every`` steps (% of the train step);
- ``eval``: the engine's ``evaluate`` on (a prefix of) the test set;
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on the CPU,
  read before the baseline is built;
- ``other_cpu_pct``: CPU time other processes used during the train/pure windows (% of one core,
  Linux), to tell a slow machine from a busy one;
- ``minimal``: the yardstick, ``cnnbench/commands/minimal_loop.py``: the short loop a skilled user writes
  (its own model definition, data resident on the device, crop and flip on the batch, the same precision
  and layout, the optimizer's fastest implementation), for plain and ResNet nets; ``vs_minimal`` =
  minimal step time / train step time (1.0: as fast as that loop);
- ``baseline``: ``cnnbench/commands/baseline.py`` (PIL + per-sample torchvision transforms + DataLoader
  workers + fp32 NCHW + plain SGD) on the same architecture (same initial weights), the same uint8
  images and the same batch size; ``speedup`` = train img/s / baseline img/s.

Warm-up iterations are excluded. The windows are interleaved (train, pure and minimal loop in a
rotating order, input, eval, baseline; ``repeats`` times) so that load from other processes hits every
measurement alike, and each figure is the median over the repeats. Without ``iters`` / ``eval_images`` each
window lasts about ``window`` seconds, sized from the warm-up. Nothing is written to disk.

Bench options ride along with the Hydra overrides: ``bench.iters=N`` (also ``+bench.iters=N``),
``bench.warmup``, ``bench.repeats``, ``bench.window`` (seconds), ``bench.eval_images``. Without a
``data=`` (or ``experiment=``) override the data is ``synthetic`` (CIFAR-sized random images).
"""

from __future__ import annotations

import copy
import json
import math
import resource
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cnnbench.core.cpuload import BUSY_PCT, OtherLoad
from cnnbench.core.timing import elapsed_s, median, ms_per_call
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.workload import matmul_peak_gflops

BENCH_OPTIONS = {"iters": int, "warmup": int, "repeats": int, "window": float, "eval_images": int}
DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 5
DEFAULT_WINDOW = 2.0  # seconds per timed window when iters / eval_images are not given
MIN_AUTO_ITERS, MAX_AUTO_ITERS = 3, 1000
MIN_INPUT_ITERS = 50  # the input pipeline alone is cheap: time more batches of it
WINDOW_NAMES = {
    "train_step_ms": "training loop",
    "pure_step_ms": "pure model step",
    "minimal_step_ms": "minimal loop",
}

# The keys of the JSON output (`cnnbench bench --json`), documented in docs/performance.md.
RESULT_KEYS = (
    "model",
    "depth",
    "params",
    "data",
    "synthetic",
    "train_images",
    "test_images",
    "batch_size",
    "device",
    "precision",
    "compiled",
    "channels_last",
    "threads",
    "torch",
    "iters",
    "warmup",
    "repeats",
    "eval_images",
    "train_img_per_s",
    "train_step_ms",
    "pure_step_ms",
    "loop_overhead_pct",
    "input_ms",
    "input_overhead_pct",
    "grad_norm_ms",
    "log_grad_every",
    "grad_norm_overhead_pct",
    "eval_img_per_s",
    "step_gflop",
    "achieved_gflops",
    "matmul_peak_gflops",
    "peak_fraction",
    "fast_path",
    "peak_memory_mb",
    "peak_memory_kind",
    "other_cpu_pct",
    "minimal_train_img_per_s",
    "minimal_step_ms",
    "vs_minimal",
    "baseline_train_img_per_s",
    "baseline_step_ms",
    "speedup",
    "samples",
)


# ----- options and config --------------------------------------------------------------------------
def split_bench_options(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate ``bench.KEY=VALUE`` (or ``+bench.KEY=VALUE``) from the Hydra overrides."""
    rest: list[str] = []
    options: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.lstrip("+").partition("=")
        if not key.startswith("bench."):
            rest.append(item)
            continue
        name = key[len("bench.") :]
        kind = BENCH_OPTIONS.get(name)
        if kind is None or not sep:
            raise CnnbenchError(
                f"{item!r} is not a bench option; use bench.KEY=VALUE with KEY one of "
                f"{', '.join(BENCH_OPTIONS)} (e.g. bench.iters=20 bench.repeats=5)."
            )
        try:
            options[name] = kind(value)
        except ValueError:
            raise CnnbenchError(
                f"{item!r}: bench.{name} must be {'an integer' if kind is int else 'a number'}."
            ) from None
    return rest, options


def compose_config(overrides: Sequence[str]):
    """The composed Hydra config for ``overrides``; ``data=synthetic`` unless data/experiment is set."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cnnbench.core.overrides import clean_hydra_message, compose, explain_override_problem

    overrides = list(overrides)
    groups = {item.lstrip("+~").partition("=")[0] for item in overrides}
    if not groups & {"data", "experiment"}:
        overrides.insert(0, "data=synthetic")
    try:
        return compose(overrides, job_name="bench")
    except (HydraException, OmegaConfBaseException) as exc:
        raise CnnbenchError(
            explain_override_problem(overrides, "bench")
            or f"{clean_hydra_message(exc)} `cnnbench bench -h` lists the config groups and their choices; "
            f"`cnnbench config` prints every key."
        ) from None


def load_baseline():
    """The DataLoader baseline module (``cnnbench.commands.baseline``, shipped with the package)."""
    from cnnbench.commands import baseline

    return baseline


def _check_options(iters: int | None, warmup: int, repeats: int, window: float, eval_images: int | None):
    for name, value, minimum in (("warmup", warmup, 1), ("repeats", repeats, 1)):
        if value < minimum:
            raise CnnbenchError(f"bench.{name}={value} must be at least {minimum}.")
    for name, value in (("iters", iters), ("eval_images", eval_images)):
        if value is not None and value < 1:
            raise CnnbenchError(f"bench.{name}={value} must be a positive integer (or left out: auto).")
    if not window > 0:
        raise CnnbenchError(f"bench.window={window} must be a positive number of seconds.")


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
    iters: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    window: float = DEFAULT_WINDOW,
    eval_images: int | None = None,
    status: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the benchmark for the composed config ``cfg``; returns the result dict (``RESULT_KEYS``).

    The parts, the step and the evaluation are the engine's own (``cnnbench.engine``): what is timed
    here is what `cnnbench train` runs. Nothing is written to disk.
    """
    from cnnbench.engine.parts import build_parts
    from cnnbench.engine.step import TrainStep, evaluate
    from cnnbench.runs.validate import check_config

    _check_options(iters, warmup, repeats, window, eval_images)
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
    result: dict[str, Any] = {
        "model": str(cfg.model.name),
        "depth": int(cfg.depth),
        "params": parts.params,
        "data": parts.data.name,
        "synthetic": bool(parts.data.synthetic),
        "train_images": len(parts.data.train_labels),
        "test_images": len(test_labels),
        "batch_size": batch_size,
        "device": str(device),
        "precision": parts.fast_path.precision,
        "compiled": bool(parts.fast_path.compile),
        "channels_last": parts.fast_path.memory_format == torch.channels_last,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "iters": n_iters,
        "warmup": warmup,
        "repeats": repeats,
        "eval_images": n_eval,
        "train_img_per_s": batch_size / (train_ms / 1e3),
        "train_step_ms": train_ms,
        "pure_step_ms": pure_ms,
        "loop_overhead_pct": 100.0 * (train_ms / pure_ms - 1.0),
        "input_ms": input_ms,
        "input_overhead_pct": 100.0 * input_ms / pure_ms,
        "grad_norm_ms": grad_ms,
        "log_grad_every": log_grad_every,
        "grad_norm_overhead_pct": 100.0 * grad_ms / (log_grad_every * train_ms)
        if log_grad_every > 0
        else 0.0,
        "eval_img_per_s": median(samples["eval_img_per_s"]),
        "step_gflop": step_gflop,
        "achieved_gflops": step_gflop / (train_ms / 1e3),
        "matmul_peak_gflops": peak,
        "peak_fraction": step_gflop / (train_ms / 1e3) / peak,
        "fast_path": parts.fast_path.record(),
        "peak_memory_mb": memory_mb,
        "peak_memory_kind": memory_kind,
        "other_cpu_pct": load.percent(),
        "minimal_train_img_per_s": None,
        "minimal_step_ms": None,
        "vs_minimal": None,
        "baseline_train_img_per_s": None,
        "baseline_step_ms": None,
        "speedup": None,
        "samples": samples,
    }
    # The two loops cnnbench is compared with: img/s, median step time, and its step time / ours.
    for prefix, ratio_key, present in (("minimal", "vs_minimal", minimal), ("baseline", "speedup", baseline)):
        if present is not None:
            ms = median(samples[f"{prefix}_step_ms"])
            result[f"{prefix}_train_img_per_s"] = batch_size / (ms / 1e3)
            result[f"{prefix}_step_ms"] = ms
            result[ratio_key] = ms / train_ms
    return result


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


# ----- output --------------------------------------------------------------------------------------
def _spread(values: Sequence[float], fmt: str) -> str:
    if len(values) < 2:
        return ""
    return f" [dim]({format(min(values), fmt)}–{format(max(values), fmt)})[/dim]"


def results_table(result: dict[str, Any]):
    from rich.table import Table

    s = result["samples"]
    bs = result["batch_size"]
    has_base = result["speedup"] is not None
    title = (
        f"{result['model']}-{result['depth']} ({result['params']:,} params), batch {bs}, "
        f"{result['device']}, {result['precision']}"
        f"{', compiled' if result['compiled'] else ''}, {result['threads']} threads"
    )
    table = Table(title=title, caption=_caption(result), title_justify="left", caption_justify="left")
    table.add_column("", style="bold")
    table.add_column("cnnbench", justify="right")
    if has_base:
        table.add_column("baseline (DataLoader)", justify="right")

    def row(label: str, ours: str, base: str = "") -> None:
        table.add_row(label, ours, *([base] if has_base else []))

    train_rates = [bs * 1e3 / ms for ms in s["train_step_ms"]]
    base_rates = [bs * 1e3 / ms for ms in s.get("baseline_step_ms", [])]
    row(
        "train img/s",
        f"{result['train_img_per_s']:,.0f}{_spread(train_rates, ',.0f')}",
        f"{result['baseline_train_img_per_s']:,.0f}{_spread(base_rates, ',.0f')}" if has_base else "",
    )
    row(
        "train step (ms)",
        f"{result['train_step_ms']:.1f}{_spread(s['train_step_ms'], '.1f')}",
        f"{result['baseline_step_ms']:.1f}{_spread(s['baseline_step_ms'], '.1f')}" if has_base else "",
    )
    row("pure model step (ms)", f"{result['pure_step_ms']:.1f}{_spread(s['pure_step_ms'], '.1f')}")
    if result["vs_minimal"] is not None:
        row(
            "minimal loop step (ms)",
            f"{result['minimal_step_ms']:.1f}{_spread(s['minimal_step_ms'], '.1f')}",
        )
        ratios = [m / t for m, t in zip(s["minimal_step_ms"], s["train_step_ms"], strict=True)]
        row("speed vs the minimal loop", f"{result['vs_minimal']:.3f}x{_spread(ratios, '.3f')}")
    row("loop overhead", f"{result['loop_overhead_pct']:+.1f}%")
    row("input pipeline (ms/step)", f"{result['input_ms']:.2f} ({result['input_overhead_pct']:.1f}%)")
    every = result["log_grad_every"]
    row(
        "gradient norms (ms each)",
        f"{result['grad_norm_ms']:.2f}"
        + (f" (every {every} steps: {result['grad_norm_overhead_pct']:.2f}%)" if every else " (off)"),
    )
    row(
        "model FLOP/s",
        f"{result['achieved_gflops']:,.0f} GFLOP/s = {100 * result['peak_fraction']:.0f}% of the "
        f"{result['precision']} matmul peak ({result['matmul_peak_gflops']:,.0f} GFLOP/s)",
    )
    row("eval img/s", f"{result['eval_img_per_s']:,.0f}{_spread(s['eval_img_per_s'], ',.0f')}")
    kind = "peak RSS" if result["peak_memory_kind"] == "rss" else "peak CUDA allocated"
    row(f"memory ({kind})", f"{result['peak_memory_mb']:,.0f} MiB")
    row(
        "precision / layout",
        f"{result['precision']} / {'channels-last' if result['channels_last'] else 'NCHW'}",
        "fp32 / NCHW" if has_base else "",
    )
    return table


def _caption(result: dict[str, Any]) -> str:
    data = "synthetic random images" if result["synthetic"] else result["data"]
    text = (
        f"{data}: {result['train_images']:,} train / {result['test_images']:,} test images. Medians of "
        f"{result['repeats']} interleaved repeats of {result['iters']} iterations after {result['warmup']} "
        f"warm-up steps (min–max in brackets); eval on {result['eval_images']:,} images. "
        f"Loop overhead = train step / pure model step - 1; input pipeline: sampling + augmentation "
        f"alone (% of the pure step)."
    )
    other = result["other_cpu_pct"]
    if other is not None:
        text += (
            f"\nOther processes used {other:.0f}% of a core during the timed windows"
            f" (per repeat: {', '.join(f'{v:.0f}%' for v in result['samples']['other_cpu_pct'])})."
        )
        if other > BUSY_PCT:
            text += " [yellow]The machine was busy: rerun when it is idle to trust these numbers.[/yellow]"
    if result["vs_minimal"] is not None:
        text += (
            f"\nSpeed vs the minimal hand-written loop (its step time / cnnbench's, same precision and "
            f"layout): [bold]{result['vs_minimal']:.3f}x[/bold]"
        )
    if result["speedup"] is not None:
        text += f"\nSpeed-up over the baseline (train img/s): [bold]{result['speedup']:.2f}x[/bold]"
    return text


def run_bench(
    overrides: list[str],
    as_json: bool = False,
    with_baseline: bool = True,
    *,
    iters: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    window: float = DEFAULT_WINDOW,
    eval_images: int | None = None,
) -> dict[str, Any]:
    """Benchmark the config composed from ``overrides``; print a table (or JSON) and return the results.

    The keyword arguments are the defaults of the ``bench.*`` options; ``bench.KEY=VALUE`` in
    ``overrides`` wins. ``iters`` / ``eval_images`` left at None: sized to ~``window`` seconds.
    """
    from rich.console import Console

    overrides, options = split_bench_options(overrides)
    settings = {
        "iters": iters,
        "warmup": warmup,
        "repeats": repeats,
        "window": window,
        "eval_images": eval_images,
        **options,
    }
    cfg = compose_config(overrides)
    err = Console(stderr=True, highlight=False)
    with err.status("cnnbench bench") as spinner:

        def status(message: str) -> None:
            if message.startswith("warning"):
                err.print(f"[yellow]{message}[/yellow]")
            spinner.update(f"cnnbench bench: {message}")

        result = measure(cfg, with_baseline=with_baseline, status=status, **settings)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(results_table(result))
    return result


def run_probe(overrides: list[str], as_json: bool = False) -> dict[str, Any]:
    """`cnnbench bench --probe`: measure the fast-path candidates on this machine again (updating the
    cache that ``auto`` settings read) and show them, the choice marked."""
    from rich.console import Console
    from rich.table import Table

    from cnnbench.core.cache import cache_dir
    from cnnbench.core.device import resolve_device
    from cnnbench.engine.gpus import job_device
    from cnnbench.fastpath.choice import PROBE_BATCH, PROBE_DEPTH, parse_candidate
    from cnnbench.fastpath.probe import probe

    overrides, _ = split_bench_options(overrides)
    cfg = compose_config(overrides)
    device = resolve_device(job_device(cfg.trainer.device))
    err = Console(stderr=True, highlight=False)
    with err.status(f"cnnbench bench --probe: timing each candidate on {device}"):
        result = probe(device, reprobe=True, announce=False)
        peaks = {
            precision: matmul_peak_gflops(device, precision)
            for precision in sorted({parse_candidate(name)[0] for name in result["timings_ms"]})
        }
    result = {**result, "matmul_peak_gflops": peaks}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    fastest = min(result["timings_ms"].values())
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu')}, {machine.get('threads')} threads"
    table = Table(
        title=f"Fast-path probe: ResNet-{PROBE_DEPTH} model update, batch {PROBE_BATCH}, on {where}",
        caption=(
            f"Flags: {' '.join(machine.get('flags', [])) or '-'}; torch {machine['torch']}. Took "
            f"{result['probe_seconds']:.1f} s; cached in {cache_dir()}. Matmul peak: "
            + ", ".join(f"{p} {g:,.0f} GFLOP/s" for p, g in peaks.items())
            + ". trainer.precision=auto / trainer.channels_last=auto use the marked choice."
        ),
        title_justify="left",
        caption_justify="left",
    )
    for column in ("candidate", "ms / step", "img/s", "vs fastest", ""):
        table.add_column(column, justify="left" if column in ("candidate", "") else "right")
    for name, ms in sorted(result["timings_ms"].items(), key=lambda item: item[1]):
        chosen = "[bold green]<- auto[/bold green]" if name == result["choice"] else ""
        table.add_row(name, f"{ms:.1f}", f"{PROBE_BATCH * 1e3 / ms:,.0f}", f"{ms / fastest:.2f}x", chosen)
    Console(highlight=False).print(table)
    return result
