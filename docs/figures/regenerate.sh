#!/usr/bin/env bash
# Regenerate the figures of README.md and docs/degradation.md from a fresh quick sweep.
#
#   docs/figures/regenerate.sh            # from the repository root, with cnnbench installed
#
# It runs `cnnbench train -m experiment=degradation_quick seed=0` into a temporary folder, then
# `cnnbench report`, `cnnbench analyze --at-init` and `cnnbench landscape` on it (the commands of
# docs/degradation.md), and copies into docs/figures/:
#   report.png     -> degradation_quick_report.png      (Figure 6, README.md)
#   analysis.png   -> degradation_quick_analysis.png    (layer responses and gradient norms)
#   landscape.png  -> degradation_quick_landscape56.png (plain-56 and ResNet-56 along one direction)
#
# How the figures in the repository were made: this sequence of commands, seed 0, on 2 vCPUs of an
# Intel Xeon model 207 with AMX (torch 2.14.1, `auto` chose bf16): final training errors plain-20 1.00%,
# plain-56 33.28%, ResNet-20 0.72%, ResNet-56 11.44%. The sweep took 6.8 minutes there and the
# landscape 88 s (docs/performance.md); other machines give other numbers (docs/degradation.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

work="$(mktemp -d "${TMPDIR:-/tmp}/cnnbench-figures.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sweep="$work/sweep"

cnnbench train -m experiment=degradation_quick seed=0 "hydra.sweep.dir=$sweep"
cnnbench report "$sweep" --out "$sweep"
S="$sweep"
cnnbench analyze "$S/depth=20,model=plain" "$S/depth=56,model=plain" \
    "$S/depth=20,model=resnet" "$S/depth=56,model=resnet" --at-init --out "$S"
cnnbench landscape "$S/depth=56,model=plain" "$S/depth=56,model=resnet" --resolution 21 --samples 512 --out "$S"

cp "$S/report.png" docs/figures/degradation_quick_report.png
cp "$S/analysis.png" docs/figures/degradation_quick_analysis.png
cp "$S/landscape.png" docs/figures/degradation_quick_landscape56.png
echo "Figures updated in docs/figures/ (from $sweep, removed on exit)."
