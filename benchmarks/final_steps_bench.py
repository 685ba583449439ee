"""How many final fine-tuning steps 16-bit LoRA needs to beat the untuned base model with a resolved
CI, and what lm-eval costs per method on the whole test split (issue #17), on a prepared base model
(default: SmolLM2-135M) and its data.

For each step count (0 = the untuned base), fine-tunes 16-bit LoRA (rank 8) with the default training
settings, benchmarks it with lm-eval on every document of the configured tasks, and writes per-task
scores, the paired bootstrap Δ vs the base (documents paired), the time per training step and the
lm-eval time per task to a JSON (default benchmarks/results/final_steps_cpu.json).

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/final_steps_bench.py \
        --model results/models/smollm2-135m/hf --data results/data/synth --steps 0 20 40
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import autoqra  # noqa: E402
from autoqra.finetune import finetune  # noqa: E402
from autoqra.io import atomic_write_json  # noqa: E402
from autoqra.lmeval import prepare_tasks, run_lm_eval, tidy_results  # noqa: E402
from autoqra.manifest import build_manifest  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.report.uncertainty import bootstrap_model  # noqa: E402
from autoqra.train import Fidelity, TrainSettings  # noqa: E402

TASK_DIR = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "lm_eval_tasks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--cache", default="results/cache")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 20, 40])
    ap.add_argument("--tasks", nargs="+", default=["synth_mc", "synth_gen", "general_text"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/final_steps_cpu.json")
    a = ap.parse_args()
    model_dir = Path(a.model)
    from autoqra.memory import ModelShape

    plan = Plan.uniform(ModelShape.from_path(model_dir).n_blocks, 16, 8, "none", group_size=64)
    train = TrainSettings(lr=a.lr, batch_size=4, max_seq_len=64, progress=False)
    runs, docs = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        include = prepare_tasks(TASK_DIR, a.data, Path(tmp) / "work")
        for steps in a.steps:
            out_dir = Path(tmp) / f"s{steps}"
            c0 = time.process_time()
            rec = finetune(model_dir, a.data, plan, cache_dir=a.cache, fidelity=Fidelity("final", steps=max(steps, 1)),
                           train=train, seed=a.seed, out_dir=out_dir, method=f"lora16_{steps}", untrained=steps == 0)
            finetune_cpu = time.process_time() - c0
            built = autoqra.load(model_dir, plan, out_dir / "adapter", cache_dir=a.cache)
            per_task = {}
            for task in a.tasks:  # one call per task, to time each
                t0, c0 = time.perf_counter(), time.process_time()
                res = run_lm_eval(built.model, built.tokenizer, [task], include_path=include, limit=a.limit,
                                  batch_size=16, seed=a.seed)
                # CPU seconds of this process: on a shared machine the wall time is inflated by the others
                per_task[task] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                                  "metrics": {r["metric"]: r["value"] for r in tidy_results(res)},
                                  "n_docs": len({r["doc_id"] for r in res["docs"]})}
                docs += [{**r, "model": "m", "method": f"s{steps}", "seed": a.seed} for r in res["docs"]]
                print(steps, task, per_task[task], flush=True)
            runs[str(steps)] = {"train_seconds": rec["train_seconds"], "steps": rec["steps"],
                                "step_seconds": rec["train_seconds"] / max(rec["steps"], 1),
                                "finetune_cpu_seconds": finetune_cpu,
                                "final_loss": rec["final_loss"], "tasks": per_task}
            del built
    unc = bootstrap_model(pd.DataFrame(docs), f"s{a.steps[0]}", extra={"general_text": ["nats_per_token"]})
    print(unc.to_string(), flush=True)
    atomic_write_json(a.out, {"runs": runs, "uncertainty": unc.to_dict(orient="records"),
                              "threads": torch.get_num_threads(), "settings": vars(a),
                              "manifest": build_manifest("final_steps_bench", vars(a), a.seed)})


if __name__ == "__main__":
    main()
