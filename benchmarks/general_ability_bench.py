"""How much each kind of plan costs in general language ability, before and after fine-tuning, on a
prepared base model (default: SmolLM2-135M) and its data: the measurement behind the search
objective's weight on general text (config ``evaluation.general_weight``, issue #17).

For the 16-bit model, uniform HQQ 4/3/2-bit, QLoRA NF4 and mixed plans with a few 2-bit blocks
(the rest filled to the uniform-4-bit budget with 8-bit blocks), measures the general-text loss on
the search part of ``autoqra.data.general_text`` (nats/token) and the task validation loss (the
search's default score is minus it): before training, after the HF fidelity (``--hf-steps``) and after
``--final-steps`` (a fresh run each), plus the time per training step.

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/general_ability_bench.py \
        --model results/models/smollm2-135m/hf --data results/data/synth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autoqra.data import load_split
from autoqra.data.general_text import general_parts
from autoqra.evaluate import EvalSettings, score_model
from autoqra.general_loss import general_text_loss
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import MemoryModel, ModelShape, resolve_budget
from autoqra.plan import Ladders, Plan
from autoqra.quant import BaseModel, build
from autoqra.search.space import SearchSpace
from autoqra.train import Fidelity, TrainSettings, tokenize_records, train_lora


def plans(model_dir: Path, group: int, n_low: tuple[int, ...]) -> dict[str, Plan]:
    mm = MemoryModel(ModelShape.from_path(model_dir), "hqq", group)
    budget = resolve_budget({"type": "uniform", "bits": 4, "rank": 8}, mm, Ladders((2, 3, 4, 8), (4, 8, 16)))
    space = SearchSpace.from_memory_model(mm, (2, 3, 4, 8), (4, 8, 16), budget.plan_bytes)
    n = space.n_blocks
    out = {"lora16": Plan.uniform(n, 16, 8, "none", group_size=group),
           "hqq4": Plan.uniform(n, 4, 8, "hqq", group_size=group), "hqq3": Plan.uniform(n, 3, 8, "hqq", group_size=group),
           "hqq2": Plan.uniform(n, 2, 8, "hqq", group_size=group),
           "qlora_nf4": Plan.uniform(n, 4, 8, "nf4", group_size=group)}
    for k in n_low:
        g = space.uniform(4, 8)
        low = np.linspace(0, n - 1, k).round().astype(int)  # spread over the depth
        g[0, low] = 0
        for ell in range(n):  # fill the budget the 2-bit blocks freed with 8-bit blocks
            if ell in low:
                continue
            g[0, ell] = 3
            if not space.feasible(g):
                g[0, ell] = 2
        out[f"mixed_{k}x2bit"] = space.to_plan(g)
    return out


def measure(model, tok, general, val, settings: EvalSettings, max_len: int) -> dict:
    t = time.process_time()
    gl = general_text_loss(model, tok, general, max_len=max_len, batch_size=8)
    tg = time.process_time() - t
    sc = score_model(model, tok, val, settings)
    return {"general_loss": gl["loss"], "general_tokens": gl["tokens"], "general_cpu_seconds": tg,
            "val_loss": sc["loss"], "val_seconds": sc["eval_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--cache", default="results/cache")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--general-docs", type=int, default=32)
    ap.add_argument("--general-max-len", type=int, default=128)
    ap.add_argument("--hf-steps", type=int, default=5)
    ap.add_argument("--final-steps", type=int, default=30, help="0: skip")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default="benchmarks/results/general_ability_cpu.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    model_dir = Path(a.model)
    general = [r["text"] for r in general_parts({})[0]["search"][:a.general_docs]]
    val = load_split(a.data, "validation")
    ev = EvalSettings(batch_size=16, max_seq_len=64, max_examples=20, metric="neg_loss")
    train = TrainSettings(lr=a.lr, batch_size=4, max_seq_len=64, progress=False)
    base = BaseModel(model_dir)
    examples = tokenize_records(base.tokenizer, load_split(a.data, "train"), 64)
    results = {}
    for name, plan in plans(model_dir, a.group_size, (1, 3, 5)).items():
        if a.only and name not in a.only:
            continue
        row = {"bits": list(plan.bits), "quantizers": plan.quantizer_label}
        for steps in sorted({0, a.hf_steps, a.final_steps}):
            built = build(model_dir, plan, cache_dir=a.cache, lora_dropout=0.05, seed=0, base=base)
            if steps:
                c0 = time.process_time()  # CPU seconds: wall time is inflated on a shared machine
                res = train_lora(built.model, built.tokenizer, examples, Fidelity("x", steps=steps), train, 0)
                row[f"s{steps}_step_seconds"] = res.train_seconds / res.steps
                row[f"s{steps}_step_cpu_seconds"] = (time.process_time() - c0) / res.steps
            row[f"s{steps}"] = measure(built.model, built.tokenizer, general, val, ev, a.general_max_len)
            print(name, steps, row[f"s{steps}"], flush=True)
            del built
        results[name] = row
    ref = results.get("lora16", {}).get("s0", {}).get("general_loss")
    out = {"results": results, "general_loss_16bit_untrained": ref,
           "settings": vars(a), "threads": torch.get_num_threads(),
           "manifest": build_manifest("general_ability_bench", vars(a), 0)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, out)
    json.dump({k: {s: v[s]["general_loss"] - (ref or 0) for s in v if s.startswith("s") and "seconds" not in s}
               for k, v in results.items()}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
