"""Is bitsandbytes' CPU inference kernel for NF4 worth keeping for scoring-only processes (issue #27)?

bitsandbytes 0.50.2 repacks an NF4 weight in place at its first eval-mode forward on a CPU with
AVX512-BF16 and then computes in bf16 (``gemv_4bit``). autoqra's layers keep that off (the repacked
layer passes no gradient to its input, and bnb's inverse is lossy). This benchmark scores the same
documents with a uniform NF4 model both ways (interleaved), one thread: the validation split's response loss
(``score_model``), the general-text loss, and greedy generation of short answers (lm-eval's
``generate_until``), and records seconds and the loss difference.

    PYTHONPATH=src nice -n 5 .venv/bin/python benchmarks/nf4_cpu_kernel_bench.py \
        --model results/models/smollm2-135m/hf --data results/data/synth
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from autoqra.data import load_split  # noqa: E402
from autoqra.data.general_text import load_general  # noqa: E402
from autoqra.evaluate import EvalSettings, score_model  # noqa: E402
from autoqra.general_loss import general_text_loss  # noqa: E402
from autoqra.io import atomic_write_json  # noqa: E402
from autoqra.manifest import build_manifest  # noqa: E402
from autoqra.memory import ModelShape  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.quant import BaseModel, build  # noqa: E402
from autoqra.quant.backends import bnb_nf4_layers, enable_cpu_inference_kernel, nf4_cpu_packed  # noqa: E402


def _generate(built, record, new_tokens: int) -> tuple[list[int], float]:
    from autoqra.data import format_prompt

    tok = built.tokenizer
    ids = tok(format_prompt(record), return_tensors="pt")["input_ids"]
    t0 = time.perf_counter()
    with torch.no_grad():
        out = built.model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=tok.pad_token_id or tok.eos_token_id)
    return out[0, ids.shape[1]:].tolist(), time.perf_counter() - t0


def run(models: dict, a: argparse.Namespace) -> dict:
    """Both models score the same documents, interleaved (ABAB...) so that the shared machine's load
    changes hit both alike; the fastest repeat counts."""
    val = load_split(a.data, "validation")[:a.n_val]
    general = load_general(Path(a.data) / "general_search.jsonl")[:a.n_general]
    settings = EvalSettings(batch_size=16, max_seq_len=64, metric="neg_loss")
    res = {name: {"score_seconds": [], "general_seconds": [], "generate_seconds": 0.0, "generated": []}
           for name in models}
    for name, built in models.items():
        t0 = time.perf_counter()
        score_model(built.model, built.tokenizer, val[:16], settings)  # warm-up (and the repack, if on)
        res[name]["warmup_seconds"] = time.perf_counter() - t0
    for _ in range(a.repeats):
        for name, built in models.items():
            s = score_model(built.model, built.tokenizer, val, settings)
            t0 = time.perf_counter()
            g = general_text_loss(built.model, built.tokenizer, general, max_len=96, batch_size=16)
            r = res[name]
            r["general_seconds"].append(time.perf_counter() - t0)
            r["score_seconds"].append(s["eval_seconds"])
            r["val_loss"], r["general_loss"] = s["loss"], g["loss"]
    for rec in val[:a.n_gen]:
        for name, built in models.items():
            out, sec = _generate(built, rec, a.new_tokens)
            res[name]["generated"].append(out)
            res[name]["generate_seconds"] += sec
    for name, built in models.items():
        res[name]["packed_layers"] = sum(nf4_cpu_packed(m) for _, m in bnb_nf4_layers(built.model))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--cache", default=None, help="quantized-block cache (default: a temporary directory)")
    ap.add_argument("--n-val", type=int, default=160)
    ap.add_argument("--n-general", type=int, default=48)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/nf4_cpu_kernel_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        raise SystemExit("this CPU has no AVX512-BF16: bitsandbytes never repacks here, nothing to compare")
    base = BaseModel(a.model)
    plan = Plan.uniform(ModelShape.from_path(a.model).n_blocks, 4, 8, "nf4", group_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: build(base.model_dir, plan, cache_dir=a.cache or tmp, base=base, seed=a.seed)
                  for name in ("training_safe", "packed")}
    enable_cpu_inference_kernel(models["packed"].model)
    for built in models.values():
        built.model.eval()
    runs = run(models, a)
    safe, packed = runs["training_safe"], runs["packed"]
    summary = {
        "score_speedup": min(safe["score_seconds"]) / min(packed["score_seconds"]),
        "general_speedup": min(safe["general_seconds"]) / min(packed["general_seconds"]),
        "generate_speedup": safe["generate_seconds"] / packed["generate_seconds"],
        "val_loss_diff": packed["val_loss"] - safe["val_loss"],
        "general_loss_diff": packed["general_loss"] - safe["general_loss"],
        "same_generations": sum(x == y for x, y in zip(safe["generated"], packed["generated"], strict=True)),
    }
    out = {"plan": "uniform NF4 rank 8", "threads": 1, "n_val": a.n_val, "n_general": a.n_general,
           "n_gen": a.n_gen, "new_tokens": a.new_tokens, "runs": runs, "summary": summary,
           "manifest": build_manifest("benchmark", seed=a.seed, extra={"model": str(a.model), "data": str(a.data)})}
    atomic_write_json(a.out, out)
    print(summary)


if __name__ == "__main__":
    main()
