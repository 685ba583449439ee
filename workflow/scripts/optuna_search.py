"""Rule optuna_search: an optuna sampler as a baseline searcher, every proposal evaluated at HF."""
from pathlib import Path

from autoqra.pipeline.common import make_evaluator
from autoqra.pipeline.methods import optuna_search
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
summary = optuna_search(model_dir, sm.params.space, sm.input.budget, evaluator, sm.params.n, sm.params.sampler,
                        sm.params.seed, sm.output[0])
log.info("optuna %s: %d evaluations, best %s", summary["sampler"], summary["evaluations"], summary["best"])
