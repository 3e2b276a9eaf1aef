#!/usr/bin/env bash
# The measurements of docs/performance.md, one command after another (never two at once: they would
# compete for the cores). Usage, from the top of the checkout:  benchmarks/run.sh [OUT_DIR]
# Writes OUT_DIR/*.json (bench and compare results) and OUT_DIR/train_*.txt (/usr/bin/time -v reports);
# summarize them with:  .venv/bin/python benchmarks/summarize.py OUT_DIR
set -euo pipefail
out=${1:-/tmp/cnnbench-bench}
mkdir -p "$out"
bin=.venv/bin
common=(data=synthetic model=resnet trainer.batch_size=128)  # CIFAR-sized: 50k train / 10k test images

# 1. cnnbench bench: the loop, the pure step, eval, peak RSS and the DataLoader baseline, ResNet-20/56.
for depth in 20 56; do
  iters=$([ "$depth" = 20 ] && echo 5 || echo 3)
  for variant in auto fp32 compiled; do
    case $variant in
      auto) extra=(trainer.precision=auto) ;;
      fp32) extra=(trainer.precision=fp32) ;;
      compiled) extra=(trainer.precision=auto trainer.compile=true) ;;
    esac
    "$bin/cnnbench" bench --json "${common[@]}" depth=$depth "${extra[@]}" \
      bench.iters=$iters bench.repeats=7 >"$out/bench_resnet${depth}_${variant}.json"
  done
done

# 2. bf16 autocast vs fp32 on the CPU: the real loop, both variants interleaved in one process.
for depth in 20 56; do
  "$bin/python" benchmarks/compare.py --common "${common[*]} depth=$depth trainer.compile=false" \
    --variant fp32 "trainer.precision=fp32" --variant bf16 "trainer.precision=bf16" \
    --iters 3 --repeats 11 --json >"$out/precision_resnet${depth}.json"
done

# 3. Peak RSS of real CIFAR-10-sized training runs (ResNet-56, 50k images, with evaluation on the
#    10k test images, TensorBoard and checkpoints), in the default precision and in fp32.
for precision in auto fp32; do
  /usr/bin/time -v "$bin/cnnbench" train "${common[@]}" depth=56 trainer.precision=$precision \
    trainer.max_iters=20 trainer.eval_every=10 trainer.log_every=10 trainer.ckpt_every=10 \
    hydra.run.dir="$out/train_run_$precision" 2>"$out/train_$precision.txt" >/dev/null
done
