"""Rule paper_fig2_pareto: memory vs HF score with the Stage-1 front, the final plan and the baselines."""
from autoqra.report.figures import fig2_pareto
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
fig2_pareto(sm.input.front, sm.input.history, sm.input.budget, sm.wildcards.model,
            methods_hf=sm.input.methods_hf, labels=sm.params.labels, out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
