#!/usr/bin/env bash
# The device check of the GPU route (issue 24), on the GPU machine as it is: no registry, no setup.sh, the
# machine's own torch/transformers/peft; what it lacks (bitsandbytes, hqq, lm-eval, datasets, ...) comes
# from .gpu_wheels/, prepared here. Results: benchmarks/results/gpu_check.json (and $OUT/gpu_check.json).
#   bash benchmarks/gpu_prepare.sh     # here, once (needs the package registry): .gpu_wheels/, <= 64 MiB
#   bash benchmarks/gpu_check.sh       # on the GPU machine, e.g. the device tool with carry [".gpu_wheels"]
# Budget: <= 8 minutes (wheel install ~10 s, a ~1B random Llama, every rung, 4 short trainings, Stage 0 on
# 4 blocks, one lm-eval call); the Python part stops itself at GPU_CHECK_TIMEOUT seconds (default 540).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU visible to $PY (torch missing, or torch.cuda.is_available() is False)." >&2
  echo "gpu_check: run it on the GPU machine (README, 'Running on a GPU'); here: python benchmarks/gpu_check.py --device cpu --dry" >&2
  exit 2
fi
if ! ls .gpu_wheels/*.whl >/dev/null 2>&1; then
  echo "gpu_check: no wheels in .gpu_wheels/: run 'bash benchmarks/gpu_prepare.sh' where the registry is reachable, then carry .gpu_wheels" >&2
  exit 2
fi
SITE=${GPU_CHECK_SITE:-/tmp/autoqra-gpu-site}
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .gpu_wheels/*.whl
export PYTHONPATH="$PWD/src:$SITE" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L || true
timeout "${GPU_CHECK_TIMEOUT:-540}" "$PY" benchmarks/gpu_check.py --device cuda "$@"
