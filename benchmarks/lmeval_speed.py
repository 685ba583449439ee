"""lm-eval time and scores before/after the dense scoring copy (issue #23), on the same documents.

Fine-tunes one plan (default QLoRA NF4 r8, the default's 30 steps, lr 1e-3, linear schedule) once,
then scores it with lm-eval on the configured tasks three ways, each from a fresh ``autoqra.load``:

- ``before``: the quantized PeftModel scored by lm-eval's own HFLM (what rule lm_eval did before #23);
- ``dense``: ``autoqra.quant.dense.dense_model`` (dequantized weights + merged LoRA), lm-eval's HFLM;
- ``dense_shared``: the dense copy scored by ``autoqra.lmeval_model.SharedContextLM`` (each shared
  context computed once, packed rows, greedy generation reusing stored contexts): what rule lm_eval
  does now (``lm_eval.dense`` and ``lm_eval.shared_context`` true),

all at batch 16,

and writes per-task scores, per-document agreement, wall and CPU times and the speed-ups to a JSON
(default benchmarks/results/lmeval_speed_cpu.json). With one thread, CPU seconds measure the work even
on a shared machine (wall seconds there depend on the neighbours' load, recorded too). Run it one-threaded:

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/lmeval_speed.py \
        --model results/models/smollm2-135m/hf --data results/data/synth
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import autoqra  # noqa: E402
from autoqra.finetune import finetune  # noqa: E402
from autoqra.io import atomic_write_json  # noqa: E402
from autoqra.lmeval import prepare_tasks, run_lm_eval, tidy_results  # noqa: E402
from autoqra.manifest import build_manifest  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.quant.dense import dense_model  # noqa: E402
from autoqra.train import Fidelity, TrainSettings  # noqa: E402

TASK_DIR = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "lm_eval_tasks"
MODES = {"before": (False, False), "dense": (True, False), "dense_shared": (True, True)}  # (dense, shared_context)
BATCH = 16


def _score(model_dir: Path, plan_path: Path, adapter: Path, cache: Path, include: Path, tasks: list[str],
           limit: int | None, dense: bool, shared: bool) -> dict:
    load0, c0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    built = autoqra.load(model_dir, plan_path, adapter, cache_dir=cache)
    model = dense_model(built.model) if dense else built.model
    t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
    out = run_lm_eval(model, built.tokenizer, tasks, include_path=include, limit=limit, batch_size=BATCH,
                      shared_context=shared)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "load_seconds": t_load,
            "load_cpu_seconds": c_load, "loadavg_1min": [load0, os.getloadavg()[0]], "docs": out["docs"],
            "scores": {f"{r['task']}/{r['metric']}": r["value"] for r in tidy_results(out)},
            "request_seconds": out.get("request_seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--work", default="/tmp/lmeval-speed")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--quantizer", default="nf4")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tasks", nargs="+", default=["synth_mc", "synth_gen", "general_text"])
    ap.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--adapter", default=None, help="score this trained adapter (of the same plan) instead of training")
    ap.add_argument("--out", default="benchmarks/results/lmeval_speed_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work, model_dir = Path(args.work), Path(args.model)
    cache = work / "cache"
    plan = Plan.uniform(30, args.bits, args.rank, args.quantizer, group_size=64, hqq_axis=0)
    plan_path = work / "plan.json"
    work.mkdir(parents=True, exist_ok=True)
    plan.save(plan_path)
    t0 = time.perf_counter()
    if args.adapter:  # e.g. a previous run's work/ft/adapter (its train.json beside it)
        rec = {**json.loads((Path(args.adapter).parent / "train.json").read_text()), "adapter": args.adapter}
        if rec["plan_hash"] != plan.hash:
            raise SystemExit(f"--adapter {args.adapter} was trained for plan {rec['plan_hash']}, not {plan.hash}")
    else:
        rec = finetune(model_dir, args.data, plan, cache_dir=cache, seed=0, out_dir=work / "ft", method="bench",
                       fidelity=Fidelity("final", steps=args.steps),
                       train=TrainSettings(lr=1e-3, batch_size=4, max_seq_len=64, lr_schedule="linear",
                                           warmup_ratio=0.1, progress=False))
    t_train = rec.get("train_seconds") if args.adapter else time.perf_counter() - t0
    include = prepare_tasks(TASK_DIR, args.data, work / "lm_eval")
    runs = {}
    for mode in args.modes:
        runs[mode] = _score(model_dir, plan_path, Path(rec["adapter"]), cache, include, args.tasks, args.limit,
                            *MODES[mode])
        print(mode, f"{runs[mode]['seconds']:.1f} s", runs[mode]["scores"], flush=True)
    ref = runs.get("before")
    result = {"plan": plan.to_dict(), "plan_hash": plan.hash, "train_steps": args.steps, "train_seconds": t_train,
              "final_loss": rec["final_loss"], "tasks": args.tasks, "limit": args.limit,
              "threads": torch.get_num_threads(), "modes": {k: {"dense": MODES[k][0], "shared_context": MODES[k][1], "batch_size": BATCH}
                                                           for k in args.modes}}
    for mode, run in runs.items():
        entry = {k: run[k] for k in ("seconds", "cpu_seconds", "load_seconds", "load_cpu_seconds", "loadavg_1min",
                                     "scores", "request_seconds")}
        entry["n_doc_rows"] = len(run["docs"])
        if ref is not None and mode != "before":
            entry["speedup"] = ref["seconds"] / run["seconds"]  # wall: shared machine, see loadavg_1min
            entry["speedup_cpu"] = ref["cpu_seconds"] / run["cpu_seconds"]  # one thread: the work, load-independent
            entry["score_delta"] = {k: run["scores"][k] - v for k, v in ref["scores"].items() if k in run["scores"]}
            a = {(d["task"], d["doc_id"], d["metric"]): d["value"] for d in ref["docs"]}
            b = {(d["task"], d["doc_id"], d["metric"]): d["value"] for d in run["docs"]}
            entry["same_documents"] = sorted({k[:2] for k in a}) == sorted({k[:2] for k in b})
            entry["per_doc_changed"] = {m: sum(1 for k in a if k[2] == m and k in b and a[k] != b[k])
                                        for m in ("acc", "acc_norm", "exact_match[first_line]")}
            ll = [abs(a[k] - b[k]) for k in a if k[2] == "loglikelihood" and k in b]
            entry["general_text_max_abs_loglik_delta"] = max(ll) if ll else None
        result[mode] = entry
    result["manifest"] = build_manifest("lmeval_speed", vars(args), 0)
    atomic_write_json(args.out, result)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
