"""Rule paper_fig3_search_efficiency: hypervolume per generation; best feasible HF score vs evaluation cost."""
from autoqra.report.figures import fig3_search_efficiency
from autoqra.report.load import optional
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
# the input function lists one hypervolume file per variant, in the order of params.variants
hypervolumes = dict(zip(sm.params.variants, sm.input.hypervolumes, strict=True))
fig3_search_efficiency(hypervolumes, sm.input.history, sm.input.budget, sm.wildcards.model,
                       random_summary=optional(sm.input.random), optuna_summary=optional(sm.input.optuna),
                       methods_hf=sm.input.methods_hf, heldout_methods=sm.params.heldout_methods,
                       out=[sm.output.pdf, sm.output.png])
log.info("wrote %s, %s", sm.output.pdf, sm.output.png)
