"""Rules refine_propose / refine_evaluate / refine_update / final_candidates / final_evaluate /
final_plan: one Stage-2 or pick step each."""
from pathlib import Path

from autoqra.pipeline import refine, search
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
ctx = refine.RefineContext(model_dir, sm.params.space, sm.input.budget, sm.input.priors, sm.params.refine,
                           sm.params.seed)
if sm.rule == "refine_propose":
    cands = refine.propose(ctx, sm.input.front, sm.input.previous or None, int(sm.wildcards.t), sm.output[0])
    log.info("iteration %s: %d candidates", sm.wildcards.t, len(cands))
elif sm.rule == "final_candidates":
    doc = refine.candidates(ctx, sm.input.front, sm.input.last or None, sm.output[0])
    log.info("%d pick candidates x seeds %s", len(doc["plans"]), doc["reevaluation_seeds"])
elif sm.rule in ("refine_evaluate", "final_evaluate"):
    from autoqra.pipeline.common import make_evaluator

    evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
    recs = search.evaluate(ctx.space, sm.input.phase, int(sm.wildcards.shard), sm.params.shards, evaluator,
                           sm.params.seed, sm.output[0])
    log.info("evaluated %d candidates: %s", len(recs), [(r["plan_hash"], r["score"]) for r in recs])
elif sm.rule == "refine_update":
    refine.update(ctx, sm.input.phase, sm.input.shards, sm.output[0])
elif sm.rule == "final_plan":
    hist = refine.final_plan(ctx, sm.input.front, sm.input.last or None, sm.input.pick, sm.input.pick_shards,
                             sm.output.plan, sm.output.history, {"refine": sm.params.refine, "space": sm.params.space},
                             out_stage1_plan=sm.output.stage1_plan, stage1_shards=sm.input.stage1_shards,
                             refine_shards=sm.input.refine_shards, n_val=sm.params.n_val,
                             stage0=sm.params.stage0)
    log.info("final plan %s", hist["final"])
else:
    raise ValueError(f"refine_step.py does not handle rule {sm.rule}")
