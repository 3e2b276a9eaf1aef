#!/usr/bin/env bash
# The measurements of docs/performance.md, one command after another (never two at once: they would
# compete for the cores). Usage, from the top of the checkout:  benchmarks/run.sh [OUT_DIR]
# Writes OUT_DIR/*.json (bench/compare results) and OUT_DIR/*.txt (tables, /usr/bin/time reports).
set -euo pipefail
out=${1:-/tmp/cnnbench-bench}
mkdir -p "$out"
bin=.venv/bin
synthetic=(data=synthetic model=resnet trainer.batch_size=128)

# 1. Throughput, loop overhead, peak RSS and the DataLoader baseline: ResNet-20/56, batch 128, 50k images.
for depth in 20 56; do
  iters=$([ "$depth" = 20 ] && echo 5 || echo 3)
  for precision in auto fp32; do
    "$bin/cnnbench" bench --json "${synthetic[@]}" depth=$depth trainer.precision=$precision \
      bench.iters=$iters bench.repeats=7 >"$out/bench_resnet${depth}_${precision}.json"
  done
done

# 2. bf16 autocast vs fp32 on the CPU: the real loop, interleaved in one process.
for depth in 20 56; do
  "$bin/python" benchmarks/compare.py --common "${synthetic[*]} depth=$depth trainer.compile=false" \
    --variant fp32 "trainer.precision=fp32" --variant bf16 "trainer.precision=bf16" \
    --iters 3 --repeats 11 --json >"$out/precision_resnet${depth}.json"
done

# 3. torch.compile on the CPU (compile time is in the warm-up, reported separately by compare.py).
"$bin/python" benchmarks/compare.py --common "${synthetic[*]} depth=20 trainer.precision=bf16" \
  --variant eager "trainer.compile=false" --variant compiled "trainer.compile=true" \
  --warmup 3 --iters 3 --repeats 9 --json >"$out/compile_resnet20.json"

# 4. Peak RSS of a real CIFAR-10-sized training run (50k images, ResNet-56, with evaluation and checkpoints).
/usr/bin/time -v "$bin/cnnbench" train "${synthetic[@]}" depth=56 trainer.max_iters=20 \
  trainer.eval_every=10 trainer.log_every=10 trainer.ckpt_every=10 hydra.run.dir="$out/train_run" \
  2>"$out/train_time.txt" >/dev/null
grep -E "Maximum resident|Elapsed" "$out/train_time.txt"
