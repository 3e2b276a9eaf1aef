"""Markdown tables from what benchmarks/run.sh wrote.

Usage: .venv/bin/python benchmarks/summarize.py OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _rate_range(step_ms: list[float], batch: int) -> str:
    rates = sorted(batch * 1e3 / ms for ms in step_ms)
    return f"{rates[0]:,.0f}–{rates[-1]:,.0f}"


def bench_table(out: Path) -> list[str]:
    lines = [
        "| model | variant | precision | train img/s (min–max) | baseline img/s (min–max) | speed-up "
        "| pure step ms | train step ms | loop overhead | input ms (% of step) | eval img/s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("bench_*.json")):
        r = json.loads(path.read_text())
        s, bs = r["samples"], r["batch_size"]
        variant = path.stem.split("_", 2)[2]
        lines.append(
            f"| {r['model']}-{r['depth']} | {variant} "
            f"| {r['precision']}{' compiled' if r['compiled'] else ''} "
            f"| {r['train_img_per_s']:,.0f} ({_rate_range(s['train_step_ms'], bs)}) "
            f"| {r['baseline_train_img_per_s']:,.0f} ({_rate_range(s['baseline_step_ms'], bs)}) "
            f"| **{r['speedup']:.2f}x** | {r['pure_step_ms']:.1f} | {r['train_step_ms']:.1f} "
            f"| {r['loop_overhead_pct']:+.1f}% | {r['input_ms']:.2f} ({r['input_overhead_pct']:.1f}%) "
            f"| {r['eval_img_per_s']:,.0f} | {r['peak_memory_mb']:,.0f} |"
        )
    return lines


def compare_table(out: Path) -> list[str]:
    lines = [
        "| run | variant | step ms median (min–max) | img/s | speed-up (median of paired ratios) "
        "| first step s |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("precision_*.json")) + sorted(out.glob("compile_*.json")):
        r = json.loads(path.read_text())
        for name, v in r["variants"].items():
            key = next(k for k in v if k.startswith("speedup_vs_"))
            lines.append(
                f"| {path.stem} | {name} | {v['step_ms']:.0f} ({min(v['samples_ms']):.0f}–"
                f"{max(v['samples_ms']):.0f}) | {v['img_per_s']:.0f} | {v[key]:.2f}x "
                f"| {v['warmup_s'][0]:.1f} |"
            )
    return lines


def train_table(out: Path) -> list[str]:
    lines = ["| run | max RSS MB | wall clock |", "|---|---|---|"]
    for path in sorted(out.glob("train_*.txt")):
        text = path.read_text()
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
        if rss:
            lines.append(
                f"| {path.stem} | {int(rss.group(1)) / 1024:,.0f} | {wall.group(1) if wall else '?'} |"
            )
    return lines


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cnnbench-bench")
    for table in (bench_table(out), compare_table(out), train_table(out)):
        print("\n".join(table), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
