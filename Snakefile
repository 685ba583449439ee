# AutoQRA pipeline: the single entry point. Stages live in workflow/rules/, the library in src/autoqra/.
#   snakemake --cores 2                                  embedded default (SmolLM2-135M, offline, CPU)
#   snakemake --cores 2 --configfile config/micro.yaml   tiny random model (tests, CI)
#   snakemake --configfile config/paper.yaml --workflow-profile profiles/slurm   paper scale on SLURM
from snakemake.utils import min_version

min_version("9.0")


# The embedded default unless --configfile names another (Snakemake would otherwise deep-merge
# both, e.g. adding the default model to the micro config); --config key=value edits either.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"



include: "workflow/rules/common.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/memory.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/paper.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
