"""Interleaved A/B timing of the real training loop under several configs, in one process.

Each variant has its own engine parts (model, data, sampler, augmentation) and ``TrainStep``, the step
`cnnbench train` runs; after the warm-up the variants take turns (the order rotates every repeat)
timing ``--iters`` training steps, so
load from other processes falls on all of them alike. Reports the median step time, img/s, and the
median of the per-repeat ratios against the first variant (the most robust figure on shared cores).

Examples (from the top of the checkout):

    .venv/bin/python benchmarks/compare.py --common "model=resnet depth=20" \
        --variant fp32 "trainer.precision=fp32" --variant bf16 "trainer.precision=bf16"

    .venv/bin/python benchmarks/compare.py --common "depth=20 trainer.precision=fp32" \
        --variant eager "trainer.compile=false" --variant compiled "trainer.compile=true" --warmup 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnbench.commands.bench import compose_config  # noqa: E402
from cnnbench.core.timing import elapsed_s, median, ms_per_call  # noqa: E402
from cnnbench.engine.parts import Parts, build_parts  # noqa: E402
from cnnbench.engine.step import TrainStep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--common", default="", help="Overrides shared by every variant (space-separated).")
    parser.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "OVERRIDES"),
        required=True,
        help="A named variant and its extra overrides (space-separated); repeat for each variant.",
    )
    parser.add_argument("--iters", type=int, default=5, help="Timed iterations per window.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed iterations per variant first.")
    parser.add_argument("--repeats", type=int, default=7, help="Windows per variant (median reported).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args(argv)

    common = args.common.split()
    names = [name for name, _ in args.variant]
    variants: dict[str, tuple[Parts, object]] = {}
    warmup_s: dict[str, list[float]] = {}
    for name, extra in args.variant:
        parts = build_parts(compose_config([*common, *extra.split()]))
        step, counter = TrainStep(parts), iter(range(10**12))

        def train_step(step=step, counter=counter) -> None:
            step(next(counter))

        fast_path = parts.fast_path
        print(f"warming up {name} ({fast_path.precision}, compiled={fast_path.compile})", file=sys.stderr)
        with parts.compile_fallback():
            warmup_s[name] = [elapsed_s(train_step, 1, parts.device) for _ in range(args.warmup)]
        variants[name] = (parts, train_step)

    ms: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            parts, train_step = variants[name]
            with parts.compile_fallback():
                ms[name].append(ms_per_call(train_step, args.iters, parts.device))
        print(
            f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n} {ms[n][-1]:.0f} ms" for n in names),
            file=sys.stderr,
        )

    first = names[0]
    results = {}
    for name in names:
        parts = variants[name][0]
        bs = parts.batch_size
        median_ms = median(ms[name])
        ratios = [a / b for a, b in zip(ms[first], ms[name], strict=True)]
        results[name] = {
            "precision": parts.fast_path.precision,
            "compiled": parts.fast_path.compile,
            "step_ms": median_ms,
            "img_per_s": bs * 1e3 / median_ms,
            f"speedup_vs_{first}": median(ratios),
            "samples_ms": ms[name],
            "warmup_s": warmup_s[name],  # incl. torch.compile's compilation in the first step
        }
    if args.json:
        print(
            json.dumps({"common": common, "threads": torch.get_num_threads(), "variants": results}, indent=2)
        )
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{' '.join(common)}: {args.repeats} interleaved repeats of {args.iters} iterations")
    columns = ("variant", "step ms (median)", "min–max", "img/s", f"speed-up vs {first}", "first step s")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, res in results.items():
        table.add_row(
            name,
            f"{res['step_ms']:.0f}",
            f"{min(res['samples_ms']):.0f}–{max(res['samples_ms']):.0f}",
            f"{res['img_per_s']:.0f}",
            f"{res[f'speedup_vs_{first}']:.2f}x",
            f"{res['warmup_s'][0]:.1f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
