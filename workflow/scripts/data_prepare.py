"""Rule data_prepare: write the dataset splits as JSONL plus manifest."""
from pathlib import Path

from autoqra.data import prepare_data
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
manifest = prepare_data(sm.params.spec, Path(sm.output.manifest).parent, seed=sm.params.seed)
log.info("dataset %s ready: %s", sm.wildcards.dataset, manifest.get("counts"))
