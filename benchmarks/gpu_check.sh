#!/usr/bin/env bash
# One prepared GPU check (< 10 min on one H100/H200), results in benchmarks/results/ (and $OUT if set):
#   1. the micro pipeline end to end on CUDA;
#   2. on a random Llama-shaped model of ~1B parameters (TinyLlama shape): build from the cache vs
#      scratch, stored bytes vs the memory model, train tokens/s and peak memory of 16-bit LoRA,
#      HQQ 4-bit, bnb NF4 and a mixed 2/3/4/8 HQQ plan (quant_bench.py);
#   3. the measured training peaks beside the predicted training peak (autoqra.train_memory);
#   4. Stage 0 on the same model: measured CUDA peak vs the analytic estimate it logs.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
bash setup.sh
PY=.venv/bin/python
RES=benchmarks/results
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
    --seq-len 256 --batch 8 --device cuda --out "$RES/quant_bench_cuda_llama1b.json"

$PY - "$work" "$RES" <<'PYEOF'
import json, sys
from pathlib import Path
from autoqra.io import atomic_write_json
from autoqra.memory import ModelShape
from autoqra.plan import Plan
from autoqra.sensitivity import SensitivitySettings, run_sensitivity
from autoqra.train_memory import predict_training_peak
work, res = Path(sys.argv[1]), Path(sys.argv[2])
out = {"device": "cuda"}
# 3. predicted vs measured training peak (autoqra.train_memory.predict_training_peak at the widest
#    micro-batch the run saw; CUDA trains in bf16, so dense weights and activations are 2 bytes)
bench = json.loads((res / "quant_bench_cuda_llama1b.json").read_text())
shape = ModelShape.from_path(work / "llama1b")
out["train"] = []
for row in bench.get("train", []):
    entry = {k: row[k] for k in ("method", "tokens_per_s", "peak_memory_bytes", "analytic_total_bytes")}
    pred = predict_training_peak(shape, Plan.from_dict(row["plan"]), **row["widest_batch"], lora_dropout=True,
                                 dense_bytes=2, act_bytes=2)
    entry["predicted_peak_bytes"] = pred["total"]
    entry["predicted_parts"] = pred
    entry["measured_over_predicted"] = row["peak_memory_bytes"] / pred["total"]
    out["train"].append(entry)
print("gpu_check: training peaks", json.dumps(out["train"], indent=1))
# 4. Stage 0: measured CUDA peak vs the analytic estimate
s = SensitivitySettings(n_calib=8, calib_len=1024, calib_batch_size=4, batch_size=4, max_seq_len=512, r_max=16,
                        grad_batches=2, low_bits=2)
rows, summary = run_sensitivity(work / "llama1b", work / "data", work / "cache", s, "hqq", 128, hqq_axis=0)
mem = summary["memory"]
out["stage0"] = {"estimate_bytes": mem["peak_bytes"], "measured_peak_bytes": mem["measured_peak_bytes"],
                 "measured_over_estimate": (mem["measured_peak_bytes"] or 0) / mem["peak_bytes"],
                 "phases": mem["phases"], "seconds": summary["timings"]}
print("gpu_check: Stage 0 peak", out["stage0"])
atomic_write_json(res / "gpu_check_cuda_llama1b.json", out)
PYEOF
if [ -n "${OUT:-}" ]; then cp "$RES"/quant_bench_cuda_llama1b.json "$RES"/gpu_check_cuda_llama1b.json "$OUT/"; fi
echo "gpu_check: total $(( $(date +%s) - t0 )) s"
