"""Rule methods_hf: every method's plan evaluated at HF fidelity."""
from pathlib import Path

from autoqra.pipeline.common import make_evaluator
from autoqra.pipeline.methods import methods_hf
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
model_dir = Path(sm.input.model)
evaluator = make_evaluator(model_dir, Path(sm.input.train).parent, sm.params.cache_dir, sm.params.evaluator)
plans = {Path(p).parent.name: p for p in sm.input.plans}
for row in methods_hf(model_dir, plans, sm.params.groups, evaluator, sm.params.seed, sm.output[0]):
    log.info("%s", row)
