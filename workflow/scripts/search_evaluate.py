"""Rule search_evaluate: evaluate one shard of a generation phase's candidates (cached)."""
from pathlib import Path

from autoqra.pipeline import search
from autoqra.pipeline.common import make_evaluator
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
ctx = search.SearchContext(model_dir, sm.params.space, sm.input.budget, sm.input.priors,
                           sm.params.search, sm.params.variant, sm.params.seed)
evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
recs = search.evaluate(ctx.space, sm.input.phase, int(sm.wildcards.shard), sm.params.shards, evaluator,
                       sm.params.seed, sm.output[0])
for r in recs:
    log.info("%s %s score=%s status=%s cached=%s train=%.1fs", r["fidelity"], r["plan_hash"], r["score"],
             r["status"], r["cached"], r["train_seconds"] or 0.0)
