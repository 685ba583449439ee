"""Benchmark of the quantized-model path on a prepared base model (default: SmolLM2-135M).

Measures, and writes to a JSON (default benchmarks/results/quant_bench_<device>.json):
  1. time to build a model for a plan from the quantized-block cache vs quantizing from scratch
     (target: cache >= 10x faster);
  2. train tokens/s for 16-bit LoRA, uniform HQQ 4-bit, bnb NF4 and a mixed 2/3/4/8 plan;
  3. bytes the quantized projections really occupy vs the memory model, per quantizer and bit-width
     (target: within 3%), and peak memory vs the memory model where CUDA is available.
(Quantization damage per quantizer and rung: benchmarks/quantizer_bench.py.)
HQQ layers run hqq's plain-PyTorch backend (dequantize, then a dense matmul) on CPU and CUDA: no fused
HQQ kernel is installed, so HQQ vs NF4 tokens/s compares implementations as well as formats (the JSON
names the backend).

    .venv/bin/python benchmarks/quant_bench.py --model results/models/smollm2-135m/hf
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.quant import BaseModel, build

MIXED_MAP = {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}


def mixed_plan(n: int, group: int) -> Plan:
    bits = [(2, 3, 4, 8)[i % 4] for i in range(n)]
    ranks = [(4, 8, 16)[i % 3] for i in range(n)]
    return Plan.mapped(bits, ranks, MIXED_MAP, group_size=group)


def bench_build(base: BaseModel, plan: Plan, cache_root: Path, repeats: int) -> dict:
    cold_dir = cache_root / "cold"
    t = time.perf_counter()
    cold = build(base.model_dir, plan, cache_dir=cold_dir, base=base)
    t_cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        b = build(base.model_dir, plan, cache_dir=cold_dir, base=base)
        warm.append(time.perf_counter() - t)
        assert b.info["cache_misses"] == 0
    t_warm = sorted(warm)[len(warm) // 2]
    return {"plan": plan.to_dict(), "scratch_seconds": t_cold, "cache_seconds": t_warm,
            "speedup": t_cold / t_warm, "cache_misses_cold": cold.info["cache_misses"]}


def bench_bytes(base: BaseModel, shape: ModelShape, cache_root: Path, group: int) -> list[dict]:
    rows = []
    for quantizer, bits in [("hqq", b) for b in (2, 3, 4, 8)] + [("nf4", 4), ("int8", 8)]:
        plan = Plan.uniform(shape.n_blocks, bits, 8, quantizer, group)
        built = build(base.model_dir, plan, cache_dir=cache_root / "bytes", base=base)
        real = built.info["stored_bytes_by_bits"][bits]
        cost = MemoryModel.for_plan(shape, plan).block_cost(bits, 8, quantizer)
        model_bytes = shape.n_blocks * (cost["weights"] + cost["quant_meta"])
        measured = real["weights"] + real["quant_meta"]
        rows.append({"quantizer": quantizer, "bits": bits, "measured_bytes": measured, "model_bytes": model_bytes,
                     "rel_error": measured / model_bytes - 1, "measured_weights": real["weights"],
                     "measured_quant_meta": real["quant_meta"]})
        del built
    return rows


def bench_train(base: BaseModel, shape: ModelShape, data_dir: Path | None, cache_root: Path, group: int,
                steps: int, seq_len: int, batch: int) -> list[dict]:
    if data_dir is None:
        return []
    from autoqra.data import load_split
    from autoqra.train import Fidelity, TrainSettings, train_lora

    records = load_split(data_dir, "train")
    n = shape.n_blocks
    plans = {"lora16": Plan.uniform(n, 16, 8, "none"), "hqq4": Plan.uniform(n, 4, 8, "hqq", group),
             "bnb_nf4": Plan.uniform(n, 4, 8, "nf4", group), "mixed_2348": mixed_plan(n, group)}
    rows = []
    settings = TrainSettings(lr=2e-4, batch_size=batch, max_seq_len=seq_len, progress=False)
    for name, plan in plans.items():
        built = build(base.model_dir, plan, cache_dir=cache_root / "train", base=base)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        res = train_lora(built.model, built.tokenizer, records, Fidelity(name="bench", steps=steps), settings, seed=0)
        mm = MemoryModel.for_plan(shape, plan)
        rows.append({"method": name, "plan_hash": plan.hash, "plan": plan.to_dict(), "steps": res.steps, "tokens": res.tokens,
                     "train_seconds": res.train_seconds, "tokens_per_s": res.tokens_per_s,
                     "peak_memory_bytes": res.peak_memory_bytes, "widest_batch": res.extra.get("widest_batch"),
                     "analytic_total_bytes": mm.plan_bytes(plan) + mm.fixed_bytes, "device": res.device})
        del built
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth", help="prepared data dir (for the training part)")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    base = BaseModel(args.model, device=args.device)
    shape = ModelShape.from_path(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="autoqra-bench-"))
    try:
        from hqq.core.quantize import HQQLinear

        result = {"model": str(args.model), "device": base.device, "n_blocks": shape.n_blocks,
                  "hqq_backend": HQQLinear.backend.value,
                  "note": "HQQ: hqq's plain-PyTorch backend (no fused kernel); tokens/s compare implementations"}
        result["build"] = [bench_build(base, mixed_plan(shape.n_blocks, args.group_size), tmp, args.repeats)]
        print(json.dumps(result["build"], indent=1))
        result["bytes"] = bench_bytes(base, shape, tmp, args.group_size)
        for r in result["bytes"]:
            print(f"{r['quantizer']:>4} {r['bits']}-bit: measured {r['measured_bytes']:>12,} B  model "
                  f"{r['model_bytes']:>14,.0f} B  rel.err {100 * r['rel_error']:+.2f}%")
        data = Path(args.data) if Path(args.data).is_dir() else None
        result["train"] = bench_train(base, shape, data, tmp, args.group_size, args.steps, args.seq_len, args.batch)
        for r in result["train"]:
            print(f"{r['method']:>10}: {r['tokens_per_s']:8.1f} tok/s  peak {r['peak_memory_bytes'] / 2**20:8.1f} MiB"
                  f"  analytic {r['analytic_total_bytes'] / 2**20:8.1f} MiB")
        result["targets"] = {
            "build_speedup_ge_10": all(b["speedup"] >= 10 for b in result["build"]),
            "bytes_within_3pct": all(abs(r["rel_error"]) <= 0.03 for r in result["bytes"]),
        }
        result["manifest"] = build_manifest("benchmark_quant", vars(args))
        dev = "cuda" if base.device.startswith("cuda") else "cpu"
        out = Path(args.out or f"benchmarks/results/quant_bench_{dev}.json")
        atomic_write_json(out, result)
        print(f"targets: {result['targets']}  -> {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
