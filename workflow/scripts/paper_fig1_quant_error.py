"""Rule paper_fig1_quant_error: quantization error vs fine-tuned HF score of the random plans."""
from autoqra.report.figures import fig1_quant_error_vs_score
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
fig1_quant_error_vs_score(sm.input.random, sm.wildcards.model, out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
