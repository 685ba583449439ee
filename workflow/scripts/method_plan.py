"""Rule method_plan: the plan one method fine-tunes."""
from pathlib import Path

from autoqra.pipeline.methods import method_plan
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
plan = method_plan(sm.params.spec, Path(sm.input.model), sm.params.space, sm.input.budget, sm.input.priors or None,
                   sm.input.source or None, sm.output[0], method=sm.wildcards.method, seed=sm.params.seed)
log.info("%s: plan %s, bits %s, ranks %s, %.0f bytes (budget %.0f)", sm.wildcards.method, plan.hash, plan.bits,
         plan.ranks, plan.meta["memory_bytes"], plan.meta["budget_bytes"])
