#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md, "The GPU check"): install cnnbench's missing dependencies
# offline from the carried wheels, then run the check (python -m benchmarks.gpu_check), which writes
# summary.json, summary.md, check.log (and report.png / report.md) into the output folder.
#
# Usage, from anywhere (it works in the checkout holding it):
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS]
#   --dry-run (or CNNBENCH_GPU_CHECK_DRY_RUN=1): every step on the CPU with tiny sizes (tests run it).
#   --out: default $OUT (the device tool's output folder), else ./gpu-check.
# Environment: CNNBENCH_PYTHON (default python3), CNNBENCH_WHEELS (default .whl, filled by
# benchmarks/fetch_gpu_wheels.sh), CNNBENCH_GPU_CHECK_WORK (scratch folder; default a new one in /tmp).
# CNNBENCH_GPU_CHECK_STEPS: only these steps, comma-separated (the check's --steps; the others skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${CNNBENCH_PYTHON:-python3}
wheels=${CNNBENCH_WHEELS:-.whl}
out=${OUT:-gpu-check}
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) args+=(--dry-run) ;;
    --out) out=$2; shift ;;
    --budget) args+=(--budget "$2"); shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
work=${CNNBENCH_GPU_CHECK_WORK:-$(mktemp -d /tmp/cnnbench-gpu-check.XXXXXX)}
site=$work/site
mkdir -p "$out" "$work"

# 1. Install, offline: the wheels into a folder of their own (the machine's python stays as it is), and
#    cnnbench from this checkout through PYTHONPATH (no build step, no network).
start=$(date +%s.%N)
status=ok
reason=""
shopt -s nullglob
wheel_files=("$wheels"/*.whl)
install_cmd=("$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
  --target "$site" "${wheel_files[@]}")
command="${install_cmd[*]}"
if [ ${#wheel_files[@]} -eq 0 ]; then
  status=skipped
  reason="no wheels in $wheels (benchmarks/fetch_gpu_wheels.sh fetches them)"
  command=""
elif ! "${install_cmd[@]}" >"$work/install.log" 2>&1; then
  status=failed
  reason="pip install: $(tail -n 3 "$work/install.log" | tr '\n"\\' '   ')"
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
probe="import hydra, omegaconf, hydra_plugins.hydra_joblib_launcher, cnnbench"
if ! "$python" -c "$probe" >>"$work/install.log" 2>&1; then
  status=failed
  reason="${reason:+$reason; }not importable: $(tail -n 1 "$work/install.log" | tr '"\\' '  ')"
fi
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
install=$(printf '{"status": "%s", "seconds": %s, "reason": "%s", "commands": ["%s"], "python": "%s"}' \
  "$status" "$seconds" "$reason" "$command" "$(command -v "$python")")
echo "install: $status in ${seconds}s ${reason}" >&2

# 2. The check itself (it writes the summary whatever happens in its steps).
exec "$python" -m benchmarks.gpu_check check --out "$out" --work "$work" --python "$python" \
  --install "$install" "${args[@]}"
