"""`cnnbench bench`'s table: the medians with their min–max over the rounds, and the caption that says
how they were measured."""

from __future__ import annotations

from collections.abc import Sequence

from cnnbench.commands.bench_result import BenchResult
from cnnbench.core.cpuload import BUSY_PCT


def _spread(values: Sequence[float], fmt: str) -> str:
    if len(values) < 2:
        return ""
    return f" [dim]({format(min(values), fmt)}–{format(max(values), fmt)})[/dim]"


def results_table(result: BenchResult):
    from rich.table import Table

    s = result.samples
    bs = result.batch_size
    has_base = result.speedup is not None
    title = (
        f"{result.model}-{result.depth} ({result.params:,} params), batch {bs}, "
        f"{result.device}, {result.precision}"
        f"{', compiled' if result.compiled else ''}, {result.threads} threads"
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
        f"{result.train_img_per_s:,.0f}{_spread(train_rates, ',.0f')}",
        f"{result.baseline_train_img_per_s:,.0f}{_spread(base_rates, ',.0f')}" if has_base else "",
    )
    row(
        "train step (ms)",
        f"{result.train_step_ms:.1f}{_spread(s['train_step_ms'], '.1f')}",
        f"{result.baseline_step_ms:.1f}{_spread(s['baseline_step_ms'], '.1f')}" if has_base else "",
    )
    row("pure model step (ms)", f"{result.pure_step_ms:.1f}{_spread(s['pure_step_ms'], '.1f')}")
    if result.vs_minimal is not None:
        row(
            "minimal loop step (ms)",
            f"{result.minimal_step_ms:.1f}{_spread(s['minimal_step_ms'], '.1f')}",
        )
        ratios = [m / t for m, t in zip(s["minimal_step_ms"], s["train_step_ms"], strict=True)]
        row("speed vs the minimal loop", f"{result.vs_minimal:.3f}x{_spread(ratios, '.3f')}")
    row("loop overhead", f"{result.loop_overhead_pct:+.1f}%")
    row("input pipeline (ms/step)", f"{result.input_ms:.2f} ({result.input_overhead_pct:.1f}%)")
    every = result.log_grad_every
    row(
        "gradient norms (ms each)",
        f"{result.grad_norm_ms:.2f}"
        + (f" (every {every} steps: {result.grad_norm_overhead_pct:.2f}%)" if every else " (off)"),
    )
    row(
        "model FLOP/s",
        f"{result.achieved_gflops:,.0f} GFLOP/s = {100 * result.peak_fraction:.0f}% of the "
        f"{result.precision} matmul peak ({result.matmul_peak_gflops:,.0f} GFLOP/s)",
    )
    row("eval img/s", f"{result.eval_img_per_s:,.0f}{_spread(s['eval_img_per_s'], ',.0f')}")
    kind = "peak RSS" if result.peak_memory_kind == "rss" else "peak CUDA allocated"
    row(f"memory ({kind})", f"{result.peak_memory_mb:,.0f} MiB")
    row(
        "precision / layout",
        f"{result.precision} / {'channels-last' if result.channels_last else 'NCHW'}",
        "fp32 / NCHW" if has_base else "",
    )
    return table


def _caption(result: BenchResult) -> str:
    data = "synthetic random images" if result.synthetic else result.data
    text = (
        f"{data}: {result.train_images:,} train / {result.test_images:,} test images. Medians of "
        f"{result.repeats} interleaved repeats of {result.iters} iterations after {result.warmup} "
        f"warm-up steps (min–max in brackets); eval on {result.eval_images:,} images. "
        f"Loop overhead = train step / pure model step - 1; input pipeline: sampling + augmentation "
        f"alone (% of the pure step)."
    )
    other = result.other_cpu_pct
    if other is not None:
        text += (
            f"\nOther processes used {other:.0f}% of a core during the timed windows"
            f" (per repeat: {', '.join(f'{v:.0f}%' for v in result.samples['other_cpu_pct'])})."
        )
        if other > BUSY_PCT:
            text += " [yellow]The machine was busy: rerun when it is idle to trust these numbers.[/yellow]"
    if result.vs_minimal is not None:
        text += (
            f"\nSpeed vs the minimal hand-written loop (its step time / cnnbench's, same precision and "
            f"layout): [bold]{result.vs_minimal:.3f}x[/bold]"
        )
    if result.speedup is not None:
        text += f"\nSpeed-up over the baseline (train img/s): [bold]{result.speedup:.2f}x[/bold]"
    return text
