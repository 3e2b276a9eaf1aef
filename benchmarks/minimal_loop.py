"""cnnbench's full training step against the minimal hand-written loop, for ResNet-20 and ResNet-56.

For each net and each setting (the fast path `auto` picks, or the ones given), `cnnbench bench`'s own
measurement (`cnnbench.commands.bench_measure.measure`): the engine's TrainStep (sampling, augmentation,
update, accumulators, gradient norms at their interval) and the minimal loop
(cnnbench/commands/minimal_loop.py) time the same number of steps in rotating rounds, in one process.
Prints the median step times and ``vs_minimal`` = minimal step time / cnnbench step time with the
per-round range (1.0: as fast; the target is >= 0.97), and the machine it ran on.

    .venv/bin/python benchmarks/minimal_loop.py                        # auto's choice
    .venv/bin/python benchmarks/minimal_loop.py --setting bf16,cl --setting fp32,nchw --repeats 7

Run it alone on the machine: other processes' load is printed beside every row.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnbench.commands.bench import compose_config  # noqa: E402
from cnnbench.commands.bench_measure import measure  # noqa: E402
from cnnbench.commands.bench_protocol import BenchProtocol  # noqa: E402
from cnnbench.fastpath.machine import machine_key  # noqa: E402

SETTINGS = {"auto": [], "cl": ["trainer.channels_last=true"], "nchw": ["trainer.channels_last=false"]}


def overrides_for(setting: str) -> list[str]:
    """``auto`` or ``PRECISION,LAYOUT`` (e.g. ``bf16,cl``, ``fp32,nchw``) as trainer overrides."""
    if setting == "auto":
        return []
    precision, layout = setting.split(",")
    return [f"trainer.precision={precision}", *SETTINGS[layout]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--setting", action="append", help="auto, or PRECISION,cl|nchw (repeatable)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", default="false", help="trainer.compile (false, true, auto)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for depth in args.depths.split(","):
        for setting in args.setting or ["auto"]:
            overrides = ["model=resnet", f"depth={depth}", f"trainer.compile={args.compile}"]
            cfg = compose_config(overrides + overrides_for(setting))
            protocol = BenchProtocol(iters=args.iters, warmup=3, repeats=args.repeats)
            result = measure(cfg, with_baseline=False, protocol=protocol)
            samples = result.samples
            ratios = [
                m / t for m, t in zip(samples["minimal_step_ms"], samples["train_step_ms"], strict=True)
            ]
            rows.append(
                {
                    "depth": int(depth),
                    "setting": setting,
                    "precision": result.precision,
                    "channels_last": result.channels_last,
                    "compiled": result.compiled,
                    "train_step_ms": round(result.train_step_ms, 2),
                    "minimal_step_ms": round(result.minimal_step_ms, 2),
                    "vs_minimal": round(result.vs_minimal, 3),
                    "vs_minimal_range": [round(min(ratios), 3), round(max(ratios), 3)],
                    "other_cpu_pct": result.other_cpu_pct,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    machine = machine_key(torch.device("cpu")) if not torch.cuda.is_available() else {}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"Machine: {machine.get('cpu', platform.processor())}, flags {machine.get('flags')}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print(
        "| net | setting | precision / layout | cnnbench ms | minimal ms | vs minimal (range) | other load |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        layout = "channels-last" if r["channels_last"] else "NCHW"
        low, high = r["vs_minimal_range"]
        print(
            f"| ResNet-{r['depth']} | {r['setting']} | {r['precision']} / {layout} "
            f"| {r['train_step_ms']:.1f} | {r['minimal_step_ms']:.1f} "
            f"| {r['vs_minimal']:.3f}x ({low:.3f}-{high:.3f}) | {r['other_cpu_pct'] or 0:.0f}% |"
        )


if __name__ == "__main__":
    main()
