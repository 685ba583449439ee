"""Rule paper_tables: Tables 1-4 as CSV and LaTeX from results/summary/*.tsv."""
from autoqra.report.tables import write_tables
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
tables = write_tables(sm.input.aggregate, sm.input.search_cost, sm.params.methods, dict(sm.output.items()),
                      models=sm.params.models, uncertainty=sm.input.uncertainty)
for name, df in tables.items():
    log.info("%s: %d rows", name, len(df))
