#!/usr/bin/env bash
# Fetch the wheels that the GPU check (benchmarks/gpu_check.sh) installs offline on a GPU machine whose
# python3 has torch, torchvision, tensorboard, typer, rich, matplotlib, scikit-learn, joblib, PyYAML and
# pytest but no Hydra: hydra-core, omegaconf, antlr4-python3-runtime (Hydra's config grammar) and
# hydra-joblib-launcher (the `hydra/launcher=gpus` sweeps). All are pure Python.
#
# Usage, from the top of the checkout (needs the network, PyPI only):  benchmarks/fetch_gpu_wheels.sh [DIR]
# DIR defaults to .whl/ (git-ignored; carried to the GPU machine). Versions are the ones this checkout's
# .venv has installed, so the GPU machine runs what the test suite ran here; set CNNBENCH_VENV_PYTHON to
# read them from another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-.whl}
venv_python=${CNNBENCH_VENV_PYTHON:-.venv/bin/python}
# The GPU machine's interpreter (Python 3.12 on x86-64 Linux); only pure-Python wheels are fetched, but pip
# still needs a target to match them against.
target=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
packages=(hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher)
# Without that .venv: the versions the GPU check was last prepared with (pip from python3).
declare -A pinned=([hydra-core]=1.3.8 [omegaconf]=2.3.1 [antlr4-python3-runtime]=4.9.3 [hydra-joblib-launcher]=1.2.0)
use_pins=0
if [ ! -x "$venv_python" ]; then
  echo "no $venv_python: using the pinned versions" >&2
  venv_python=python3  # pip only: its own packages say nothing about what cnnbench was tested with
  use_pins=1
fi

version_of() {
  if [ "$use_pins" = 1 ]; then
    echo "${pinned[$1]}"
  else
    "$venv_python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
  fi
}

rm -rf "$out"
mkdir -p "$out"
for name in "${packages[@]}"; do
  spec="$name==$(version_of "$name")"
  # antlr4-python3-runtime 4.9.3 exists only as a source distribution: build its (pure-Python) wheel here.
  if ! "$venv_python" -m pip download -q --no-deps --only-binary=:all: "${target[@]}" -d "$out" "$spec"; then
    echo "no wheel of $spec on the index: building one from its source distribution" >&2
    "$venv_python" -m pip wheel -q --no-deps -w "$out" "$spec"
  fi
done
# One wheel per package: two versions of one would stop the offline install.
ls "$out"
du -sh "$out"
