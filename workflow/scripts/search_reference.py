"""Rule search_reference: the hypervolume reference shared by every search variant of a model."""
from pathlib import Path

from autoqra.pipeline import search
from autoqra.pipeline.common import make_evaluator, reference_rank, search_space
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
space = search_space(model_dir, sm.params.space, sm.input.budget)
fixed = sm.params.hv_ref_score
evaluator = None if fixed is not None else make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir,
                                                          sm.params.evaluator)
doc = search.reference(space, evaluator, sm.params.seed, reference_rank(sm.input.budget, space), sm.output[0],
                       fixed_score=fixed)
log.info("hypervolume reference score %s (%s): %s", doc["score"], doc["source"], doc["plans"])
