"""Rule lm_eval: lm-evaluation-harness on one fine-tuned (method, seed); a run another method already
scored with the same plan, adapter weights, settings and seed is copied (autoqra.runstore)."""
import time
from pathlib import Path

from autoqra.io import atomic_write_json, atomic_write_tsv, read_json
from autoqra.lmeval import DOC_COLUMNS, evaluate_adapter, lm_eval_identity, tidy_results
from autoqra.manifest import build_manifest
from autoqra.plan import Plan
from autoqra.runlog import set_threads, setup_logging
from autoqra.runstore import RunStore, retag_json

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
cfg = sm.params.lm_eval
method, seed = sm.wildcards.method, int(sm.wildcards.seed)
data_dir = Path(sm.input.test).parent


def produce():
    t0 = time.perf_counter()
    out, docs = evaluate_adapter(sm.input.model, sm.input.plan, sm.input.adapter, cfg, task_dir=sm.params.task_dir,
                                 data_dir=data_dir, work_dir=sm.params.work_dir, cache_dir=sm.params.cache_dir,
                                 seed=seed)
    out.update(method=method, seed=seed, eval_seconds=time.perf_counter() - t0, n_doc_rows=len(docs),
               manifest=build_manifest("lm_eval", dict(cfg), seed))
    atomic_write_tsv(sm.output.docs, DOC_COLUMNS, [[r[c] for c in DOC_COLUMNS] for r in docs])
    atomic_write_json(sm.output.result, out)


outputs = {"result.json": sm.output.result, "docs.tsv": sm.output.docs}
if sm.params.share:
    identity = lm_eval_identity(sm.input.model, Plan.load(sm.input.plan), sm.input.adapter, cfg,
                                task_dir=sm.params.task_dir, data_dir=data_dir, seed=seed)
    share = RunStore(sm.params.cache_dir).run("lm_eval", identity, outputs, produce,
                                              origin={"method": method, "seed": seed, "result": str(Path(sm.output.result).resolve())},
                                              retag=retag_json({"method": method, "seed": seed}))
    if share["shared"]:
        log.info("same run as %s seed %s (key %s): copied", share["origin"]["method"], share["origin"]["seed"], share["key"])
else:
    produce()
for row in tidy_results(read_json(sm.output.result)):
    log.info("%s %s = %.4f", row["task"], row["metric"], row["value"])
