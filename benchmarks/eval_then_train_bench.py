"""Does an evaluation before training change a QLoRA fine-tune (issue #27)?

On a prepared base model (default: SmolLM2-135M) and its data, fine-tunes uniform NF4 at rank 4 for 30
steps (lr 1e-3, batch 4) three ways from the same build and seed: without an evaluation, with an evaluation
(the test-split score) at step 0, and, for contrast, with an evaluation at step 0 and the fix disabled
(bitsandbytes' default flag, so the evaluation repacks the NF4 weights for its CPU kernel, and train_lora's
guard bypassed). Records the final training loss and the test-split response loss after training, and writes
them to a JSON (default benchmarks/results/eval_then_train_cpu.json).

    PYTHONPATH=src nice -n 5 .venv/bin/python benchmarks/eval_then_train_bench.py \
        --model results/models/smollm2-135m/hf --data results/data/synth
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from unittest import mock

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from autoqra.data import load_split  # noqa: E402
from autoqra.evaluate import EvalSettings, score_model  # noqa: E402
from autoqra.io import atomic_write_json  # noqa: E402
from autoqra.manifest import build_manifest  # noqa: E402
from autoqra.memory import ModelShape  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.quant import BaseModel, build  # noqa: E402
from autoqra.quant.backends import bnb_nf4_layers, nf4_cpu_packed  # noqa: E402
from autoqra.train import Fidelity, TrainSettings, train_lora  # noqa: E402

RUNS = {"no_eval": (False, False), "eval_at_step0": (True, False), "eval_at_step0_fix_disabled": (True, True)}


def one_run(base: BaseModel, plan: Plan, cache: str, data: dict, evaluate: bool, disable_fix: bool,
            a: argparse.Namespace) -> dict:
    from bitsandbytes.functional import has_avx512bf16

    built = build(base.model_dir, plan, cache_dir=cache, base=base, seed=a.seed)
    settings = EvalSettings(batch_size=16, max_seq_len=a.max_seq_len, metric="neg_loss")
    out: dict = {}
    if disable_fix:  # bitsandbytes' own default: repack at the first eval-mode forward where the CPU allows
        for _, m in bnb_nf4_layers(built.model):
            m.support_avx512bf16_for_cpu = bool(has_avx512bf16())
    if evaluate:
        out["test_loss_step0"] = score_model(built.model, built.tokenizer, data["test"], settings)["loss"]
    out["packed_layers_before_training"] = sum(nf4_cpu_packed(m) for _, m in bnb_nf4_layers(built.model))
    train = TrainSettings(lr=a.lr, batch_size=4, max_seq_len=a.max_seq_len, progress=False)
    guard = mock.patch("autoqra.train.keep_training_layout", lambda model: 0) if disable_fix else contextlib.nullcontext()
    t0 = time.perf_counter()
    with guard:
        res = train_lora(built.model, built.tokenizer, data["train"], Fidelity("bench", steps=a.steps), train, a.seed)
    out["train_seconds"] = time.perf_counter() - t0
    out["final_train_loss"] = res.final_loss  # mean of the last 10 % of steps
    out["loss_history"] = res.loss_history
    out["test_loss"] = score_model(built.model, built.tokenizer, data["test"], settings)["loss"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--cache", default=None, help="quantized-block cache (default: a temporary directory)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=None, help="score the first N test documents (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", default="benchmarks/results/eval_then_train_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from bitsandbytes.functional import has_avx512bf16

    base = BaseModel(a.model)
    plan = Plan.uniform(ModelShape.from_path(a.model).n_blocks, 4, a.rank, "nf4", group_size=64)
    data = {"train": load_split(a.data, "train"), "test": load_split(a.data, "test")[:a.n_test]}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.runs:
            runs[name] = one_run(base, plan, a.cache or tmp, data, *RUNS[name], a)
            print(name, {k: v for k, v in runs[name].items() if k != "loss_history"}, flush=True)
    summary = {}
    if "no_eval" in runs and "eval_at_step0" in runs:
        ref, ev = runs["no_eval"], runs["eval_at_step0"]
        summary = {"final_train_loss_diff": ev["final_train_loss"] - ref["final_train_loss"],
                   "test_loss_diff": ev["test_loss"] - ref["test_loss"],
                   "max_step_loss_diff": max(abs(x - y) for x, y in zip(ev["loss_history"], ref["loss_history"],
                                                                        strict=True))}
    out = {"plan": f"uniform NF4 rank {a.rank}", "steps": a.steps, "lr": a.lr, "batch_size": 4,
           "max_seq_len": a.max_seq_len, "n_test": len(data["test"]), "threads": 1, "has_avx512bf16": bool(has_avx512bf16()),
           "runs": runs, "summary": summary,
           "manifest": build_manifest("benchmark", seed=a.seed, extra={"model": str(a.model), "data": str(a.data)})}
    atomic_write_json(a.out, out)
    print(summary)


if __name__ == "__main__":
    main()
