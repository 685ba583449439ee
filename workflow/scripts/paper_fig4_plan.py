"""Rule paper_fig4_plan: bits and ranks per block of the final AutoQRA plan with the priors."""
from autoqra.report.figures import fig4_plan
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
fig4_plan(sm.input.plan, sm.input.priors, sm.wildcards.model, out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
