"""Rule summarize: tidy TSVs under results/summary/ from every stage's outputs."""
from autoqra.pipeline.summarize import summarize
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
tables = summarize(dict(sm.input.items()), sm.params.methods, sm.output)
for name, df in tables.items():
    log.info("%s: %d rows", name, len(df))
