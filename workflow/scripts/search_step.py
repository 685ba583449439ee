"""Rules search_propose / search_promote / search_select / search_front: one Stage-1 step each.

Pure search code only (no torch): each step restores the search from the previous step's state.
"""
from pathlib import Path

from autoqra.pipeline import search
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
ctx = search.SearchContext(Path(sm.input.model), sm.params.space, sm.input.budget, sm.input.priors,
                           sm.params.search, sm.params.variant, sm.params.seed, sm.input.get("hv_reference"))
if sm.rule == "search_propose":
    g = int(sm.wildcards.g)
    search.propose(ctx, sm.input.previous or None, g, sm.output[0])
elif sm.rule == "search_promote":
    search.promote(ctx, sm.input.phase, sm.input.shards, sm.output[0])
elif sm.rule == "search_select":
    search.select(ctx, sm.input.phase, sm.input.shards, sm.output[0])
elif sm.rule == "search_front":
    summary = search.front(ctx, sm.input.last, sm.input.shards, Path(sm.output.front).parent,
                           {"search": sm.params.search, "variant": sm.params.variant, "space": sm.params.space},
                           n_val=sm.params.n_val)
    log.info("front of %d plans after %d generations; evaluations %s", len(summary["front"]),
             summary["generations_run"], summary["evaluations"])
else:
    raise ValueError(f"search_step.py does not handle rule {sm.rule}")
log.info("%s done", sm.rule)
