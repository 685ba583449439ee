"""CPU figures of the forecast's device table (autoqra.forecast.devices), measured on this machine.

Per model (the micro random Llama, SmolLM2-135M) and plan (16-bit LoRA, uniform NF4, a mixed HQQ plan):
CPU seconds (process_time: the figures do not move with the neighbours' load on a shared machine)
of a job's start (imports + model load), of building the quantized model (cold and warm quantization
cache), of training (per token, per step) and of scoring (per token). One thread, float32.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python benchmarks/forecast_calibrate.py \
        --smollm2 results/models/smollm2-135m/hf --data results/data/synth --out benchmarks/results/forecast_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MICRO = {"source": "micro", "id": None, "revision": None, "micro": {
    "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512}}
START = ("import time,resource; from autoqra.quant import BaseModel; import autoqra.evaluate, peft; "
         "BaseModel({path!r}); print(resource.getrusage(resource.RUSAGE_SELF).ru_utime"
         "+resource.getrusage(resource.RUSAGE_SELF).ru_stime)")


def start_seconds(model_dir: Path) -> float:
    """CPU seconds of a fresh process importing the job stack and loading the model."""
    out = subprocess.run([sys.executable, "-c", START.format(path=str(model_dir))], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(model_dir: Path, data_dir: Path, seq_len: int, steps: tuple[int, int]) -> dict:
    import torch

    from autoqra.evaluate import EvalSettings, score_model
    from autoqra.io import read_jsonl
    from autoqra.memory import ModelShape
    from autoqra.plan import Plan
    from autoqra.quant import BaseModel, build
    from autoqra.train import Fidelity, TrainSettings, train_lora

    torch.set_num_threads(1)
    shape = ModelShape.from_path(model_dir)
    n = shape.n_blocks
    g = 32 if shape.hidden_size < 128 else 64
    plans = {"lora16": Plan.uniform(n, 16, 8, "none", g, 0), "nf4": Plan.uniform(n, 4, 8, "nf4", g, 0),
             "hqq_mixed": Plan(tuple((2, 3, 4, 8)[i % 4] for i in range(n)), (8,) * n, ("hqq",) * n, g, 0)}
    base = BaseModel(model_dir)
    train = list(read_jsonl(data_dir / "train.jsonl"))
    val = list(read_jsonl(data_dir / "validation.jsonl"))[:64]
    settings = TrainSettings(lr=1e-3, batch_size=4, max_seq_len=seq_len, progress=False)
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, plan in plans.items():
            row = {}
            for phase in ("cold", "warm"):
                t = time.process_time()
                built = build(model_dir, plan, cache_dir=cache, lora_dropout=0.05, alpha_per_rank=2.0, seed=0,
                              base=base)
                row[f"build_{phase}_s"] = time.process_time() - t
            res = {}
            for k in steps:
                t = time.process_time()
                r = train_lora(built.model, built.tokenizer, train, Fidelity("x", steps=k), settings, 0)
                res[k] = (time.process_time() - t, r.tokens)
            (t1, tok1), (t2, tok2) = res[steps[0]], res[steps[1]]
            row["train_s_per_step"] = (t2 - t1) / (steps[1] - steps[0])
            row["train_tokens_per_step"] = (tok2 - tok1) / (steps[1] - steps[0])
            row["train_tokens_per_s"] = row["train_tokens_per_step"] / row["train_s_per_step"]
            t = time.process_time()
            sc = score_model(built.model, built.tokenizer, val, EvalSettings(batch_size=16, metric="neg_loss",
                                                                            max_seq_len=seq_len))
            row["score_s"] = time.process_time() - t
            row["score_examples"] = len(val)
            row["score_loss"] = sc["loss"]
            rows[name] = row
            del built
    return {"shape": shape.__dict__, "seq_len": seq_len, "plans": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smollm2", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="forecast-cal-")))
    args = ap.parse_args()
    from autoqra.io import atomic_write_json
    from autoqra.manifest import build_manifest
    from autoqra.models import prepare_model

    micro_dir = args.work / "micro"
    if not (micro_dir / "config.json").exists():
        prepare_model(MICRO, micro_dir, seed=0)
    out = {"what": __doc__.split("\n\n")[1].strip(), "models": {}}
    for name, path, seq, steps in (("micro", micro_dir, 96, (2, 8)), ("smollm2-135m", args.smollm2, 64, (2, 6))):
        out["models"][name] = {"start_cpu_s": start_seconds(path), **measure(path, args.data, seq, steps)}
        print(name, json.dumps(out["models"][name], indent=1), flush=True)
    out["manifest"] = build_manifest(stage="forecast_calibrate", config={k: str(v) for k, v in vars(args).items()})
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
