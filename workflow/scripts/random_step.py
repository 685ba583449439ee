"""Rules random_propose / random_evaluate / random_select / random_reevaluate / random_pick: the
random-search baseline at AutoQRA's cost, with the same noise-robust pick."""
from pathlib import Path

from autoqra.pipeline import methods, search
from autoqra.pipeline.common import search_space
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
model_dir = Path(sm.input.model)
if sm.rule == "random_propose":
    budget = methods.equal_cost_budget(sm.params.n, sm.input.autoqra_history or None, sm.params.refine,
                                       sm.params.seed)
    cands = methods.random_propose(model_dir, sm.params.space, sm.input.budget, budget, sm.params.seed, sm.output[0])
    log.info("%d random feasible plans (equal cost: %s)", len(cands), budget)
elif sm.rule in ("random_evaluate", "random_reevaluate"):
    from autoqra.pipeline.common import make_evaluator

    set_threads(sm.threads)
    space = search_space(model_dir, sm.params.space, sm.input.budget)
    evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
    recs = search.evaluate(space, sm.input.phase, int(sm.wildcards.shard), sm.params.shards, evaluator,
                           sm.params.seed, sm.output[0], quant_error=sm.rule == "random_evaluate")
    log.info("evaluated %d random plans: %s", len(recs), [(r["plan_hash"], r["score"]) for r in recs])
elif sm.rule == "random_select":
    doc = methods.random_select(model_dir, sm.params.space, sm.input.budget, sm.params.refine, sm.input.phase,
                                sm.input.shards, sm.params.seed, sm.output[0])
    log.info("%d pick candidates x seeds %s", len(doc["plans"]), doc["reevaluation_seeds"])
elif sm.rule == "random_pick":
    summary = methods.random_pick(model_dir, sm.params.space, sm.input.budget, sm.params.refine, sm.input.phase,
                                  sm.input.shards, sm.input.pick, sm.input.pick_shards, sm.params.seed,
                                  sm.output.plan, sm.output.summary)
    log.info("random search plan %s", summary["final"])
else:
    raise ValueError(f"random_step.py does not handle rule {sm.rule}")
