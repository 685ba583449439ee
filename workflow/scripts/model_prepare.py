"""Rule model_prepare: provision one base model as a plain HF directory plus manifest."""

from autoqra.models import prepare_model
from autoqra.runlog import set_threads, setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
manifest = prepare_model(sm.params.spec, sm.output.hf, seed=sm.params.seed)
log.info("model %s ready: %s parameters", sm.wildcards.model, manifest.get("total_params"))
