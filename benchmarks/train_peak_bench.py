"""Predicted vs measured training peak memory per method (issue #16), on a prepared base model.

For each plan (16-bit LoRA, QLoRA NF4, uniform HQQ 4-bit, uniform int8 and a mixed plan over the
default quantizer map) the final fine-tuning step (``autoqra.finetune``) runs a few LoRA steps and
records the measured peak (CUDA: max allocated; CPU: held tensors + the activations autograd saves)
beside ``autoqra.train_memory.predict_training_peak``; also the paper's M(C) and the stored bytes.
Target: prediction within 15 % of the measurement for every method.

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/train_peak_bench.py \\
        --model /tmp/smollm2/hf --data /tmp/synth
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from autoqra.finetune import finetune
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import ModelShape
from autoqra.plan import Plan
from autoqra.train import Fidelity, TrainSettings

MAP = {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}


def plans(n: int, group: int, axis: int) -> dict[str, Plan]:
    mixed_bits = [(2, 3, 4, 8, 16)[i % 5] for i in range(n)]
    mixed_ranks = [(4, 8, 16)[i % 3] for i in range(n)]
    return {"lora16": Plan.uniform(n, 16, 8, "none"), "qlora_nf4": Plan.uniform(n, 4, 8, "nf4", group, axis),
            "hqq4": Plan.uniform(n, 4, 8, "hqq", group, axis), "int8": Plan.uniform(n, 8, 8, "int8", group, axis),
            "mixed": Plan.mapped(mixed_bits, mixed_ranks, MAP, group, axis)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache-dir", default=None, help="quantization cache (default: a dir beside --model)")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--hqq-axis", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/train_peak_bench.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = ModelShape.from_path(args.model).n_blocks
    tmp = Path(tempfile.mkdtemp(prefix="autoqra-peak-"))
    rows = []
    try:
        for name, plan in plans(n, args.group_size, args.hqq_axis).items():
            rec = finetune(args.model, args.data, plan, cache_dir=args.cache_dir or Path(args.model).parent / "cache",
                           fidelity=Fidelity("bench", steps=args.steps),
                           train=TrainSettings(lr=1e-3, batch_size=args.batch, max_seq_len=args.seq_len,
                                               progress=False, lr_schedule="linear", warmup_ratio=0.1),
                           seed=0, out_dir=tmp / name, method=name)
            row = {"method": name, "quantizers": rec["quantizers"], "plan_hash": rec["plan_hash"],
                   "device": rec["device"], "peak_kind": rec["peak_kind"],
                   "memory_analytic_bytes": rec["memory_analytic_bytes"],
                   "memory_stored_bytes": rec["memory_measured_bytes"],
                   "peak_measured_bytes": rec["peak_train_bytes"], "peak_measured": rec["peak_train_measured"],
                   "peak_predicted_bytes": rec["peak_train_predicted_bytes"],
                   "peak_predicted": rec["peak_train_predicted"],
                   "ratio_predicted_measured": rec["peak_train_predicted_bytes"] / rec["peak_train_bytes"]}
            rows.append(row)
            print(f"{name:>10} ({row['quantizers']}): measured {row['peak_measured_bytes'] / 2**20:8.1f} MiB, "
                  f"predicted {row['peak_predicted_bytes'] / 2**20:8.1f} MiB (x{row['ratio_predicted_measured']:.3f}); "
                  f"M(C) {row['memory_analytic_bytes'] / 2**20:.1f} MiB, stored {row['memory_stored_bytes'] / 2**20:.1f} MiB",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"model": str(args.model), "rows": rows,
              "target_within_15pct": all(abs(r["ratio_predicted_measured"] - 1) <= 0.15 for r in rows),
              "manifest": build_manifest("benchmark_train_peak", {k: v for k, v in vars(args).items() if k != "out"})}
    atomic_write_json(args.out, result)
    print(f"within 15 %: {result['target_within_15pct']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
