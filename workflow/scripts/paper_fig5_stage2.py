"""Rule paper_fig5_stage2: utility per Stage-2 iteration, best so far and trust-region radius."""
from autoqra.report.figures import fig5_stage2
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
fig5_stage2(sm.input.history, sm.wildcards.model, out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
