"""Rule optuna_search: an optuna sampler as a baseline searcher at AutoQRA's cost, with the same pick."""
from pathlib import Path

from autoqra.pipeline.common import make_evaluator
from autoqra.pipeline.methods import equal_cost_budget, optuna_search
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
budget = equal_cost_budget(sm.params.n, sm.input.autoqra_history or None, sm.params.refine, sm.params.seed)
summary = optuna_search(model_dir, sm.params.space, sm.input.budget, evaluator, budget, sm.params.sampler,
                        sm.params.seed, sm.output[0], sm.params.refine)
log.info("optuna %s: %d evaluations (equal cost: %s), pick %s", summary["sampler"], summary["evaluations"], budget,
         summary["final"])
