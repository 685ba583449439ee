"""Rule paper_fig6_priors: I_q vs I_r per block with their correlations."""
from autoqra.report.figures import fig6_priors
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
fig6_priors(sm.input.priors, sm.input.correlations, sm.wildcards.model, out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
