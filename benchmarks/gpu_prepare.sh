#!/usr/bin/env bash
# Prepare .gpu_wheels/ (git-ignored, <= 64 MiB): the packages benchmarks/gpu_check.sh needs that the GPU
# machine (the device tool's 'cuda' image: Python 3.12, torch 2.11 cu130, transformers 5.17, peft, accelerate,
# pandas, pyarrow; no registry) lacks. Run HERE, where the package registry is reachable:
#   bash benchmarks/gpu_prepare.sh            # then, on the GPU machine: bash benchmarks/gpu_check.sh
#   AUDIT=1 bash benchmarks/gpu_prepare.sh    # also run the check's dry mode and audit its imports (~1 min)
# - bitsandbytes 0.50.2 without the native libraries of other CUDA/ROCm versions (cuda130 + CPU kept);
# - hqq 0.2.8.post1 built as a pure-Python wheel (DISABLE_CUDA=1: autoqra uses its PyTorch backend);
# - pure-Python wheels the check imports: lm-eval and datasets (+ dill, multiprocess), termcolor (hqq), pytz.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=.gpu_wheels
LIMIT=$((64 * 1024 * 1024))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$DIR"
mkdir -p "$DIR"
pip=("$PY" -m pip --disable-pip-version-check -q)
target=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)

"${pip[@]}" download --no-deps "${target[@]}" -d "$tmp/bnb" bitsandbytes==0.50.2
"$PY" benchmarks/gpu_wheels.py trim "$tmp"/bnb/bitsandbytes-*.whl --keep cuda130 --out "$DIR"
"${pip[@]}" download --no-deps --no-binary=:all: -d "$tmp/hqq" hqq==0.2.8.post1
DISABLE_CUDA=1 "${pip[@]}" wheel --no-deps --no-build-isolation -w "$DIR" "$tmp"/hqq/hqq-*.tar.gz
"${pip[@]}" download --no-deps "${target[@]}" -d "$DIR" lm-eval==0.4.13 datasets==5.2.0 dill==0.4.1 \
    multiprocess==0.70.19 termcolor==3.3.0 pytz==2026.6

total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
ls -l "$DIR"
echo "gpu_prepare: $(ls "$DIR"/*.whl | wc -l) wheels, $((total / 1024)) KiB in $DIR"
if [ "$total" -gt "$LIMIT" ]; then echo "gpu_prepare: over the 64 MiB the GPU machine takes per call"; exit 1; fi
if [ -n "${AUDIT:-}" ]; then
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=src "$PY" benchmarks/gpu_check.py --device cpu --dry \
      --out "$tmp/dry.json" >"$tmp/dry.log" 2>&1 || { tail -20 "$tmp/dry.log"; exit 1; }
  "$PY" benchmarks/gpu_wheels.py audit "$tmp/dry.json" "$DIR"
fi
