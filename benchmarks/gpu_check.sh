#!/usr/bin/env bash
# One prepared GPU check (< 10 min on one H100/H200): the micro pipeline end to end on CUDA, then the
# quantized-model benchmark (build from cache vs scratch, stored bytes vs the memory model, train
# tokens/s and peak memory for 16-bit LoRA / HQQ 4-bit / bnb NF4 / mixed 2-3-4-8) on a random
# Llama-shaped model of ~1B parameters. Results land in benchmarks/results/ (and $OUT if set).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
bash setup.sh
PY=.venv/bin/python
nvidia-smi -L || { echo "gpu_check: no CUDA GPU visible"; exit 1; }
$PY -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))"

work=$(mktemp -d)
t0=$(date +%s)
.venv/bin/snakemake -s Snakefile --directory "$work/micro" --cores 4 --configfile config/micro.yaml
echo "gpu_check: micro pipeline on GPU took $(( $(date +%s) - t0 )) s"

# A ~1B-parameter Llama shape (TinyLlama-like, GQA), random weights, local tokenizer.
$PY - "$work" <<'PYEOF'
import sys
from pathlib import Path
from autoqra.data import prepare_data
from autoqra.models import prepare_model
work = Path(sys.argv[1])
spec = {"source": "micro", "id": None, "revision": None, "micro": {
    "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}}
m = prepare_model(spec, work / "llama1b", seed=0)
print("gpu_check: model params", m["total_params"])
prepare_data({"name": "synth", "source": "synthetic", "path": None, "id": None, "n_train": 2000, "n_val": 100,
              "n_test": 100, "skills": None, "max_seq_len": 256}, work / "data", seed=0)
PYEOF
$PY benchmarks/quant_bench.py --model "$work/llama1b" --data "$work/data" --group-size 128 --steps 20 \
    --seq-len 256 --batch 8 --device cuda --out benchmarks/results/quant_bench_cuda_llama1b.json
if [ -n "${OUT:-}" ]; then cp benchmarks/results/quant_bench_cuda_llama1b.json "$OUT/"; fi
echo "gpu_check: total $(( $(date +%s) - t0 )) s"
