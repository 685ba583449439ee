"""Rule lm_eval: lm-evaluation-harness on one fine-tuned (method, seed)."""
import shutil
import time
from pathlib import Path

import autoqra
from autoqra.io import atomic_write_json, atomic_write_tsv
from autoqra.lmeval import DOC_COLUMNS, prepare_tasks, run_lm_eval, tidy_results
from autoqra.manifest import build_manifest
from autoqra.quant.dense import dense_model
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
cfg = sm.params.lm_eval
t0 = time.perf_counter()
built = autoqra.load(Path(sm.input.model), sm.input.plan, sm.input.adapter, cache_dir=sm.params.cache_dir)
model = dense_model(built.model) if cfg.get("dense", True) else built.model  # same function, dense matmuls
include = prepare_tasks(sm.params.task_dir, Path(sm.input.test).parent, sm.params.work_dir)
out = run_lm_eval(model, built.tokenizer, cfg["tasks"], include_path=include, limit=cfg["limit"],
                  batch_size=cfg["batch_size"], num_fewshot=cfg["num_fewshot"], seed=int(sm.wildcards.seed),
                  max_length=cfg["max_length"])
docs = out.pop("docs")
out.update(method=sm.wildcards.method, seed=int(sm.wildcards.seed), plan_hash=built.plan.hash,
           eval_seconds=time.perf_counter() - t0, n_doc_rows=len(docs),
           manifest=build_manifest("lm_eval", dict(cfg), int(sm.wildcards.seed)))
atomic_write_tsv(sm.output.docs, DOC_COLUMNS, [[r[c] for c in DOC_COLUMNS] for r in docs])
atomic_write_json(sm.output.result, out)
shutil.rmtree(sm.params.work_dir, ignore_errors=True)
for row in tidy_results(out):
    log.info("%s %s = %.4f", row["task"], row["metric"], row["value"])
