# Downloads on the submit host (localrules), so that jobs on compute nodes never need the internet:
# hub models, hub datasets and lm-eval registry task data go into the Hugging Face cache (HF_HOME,
# shared with the compute nodes); every other job runs with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1
# (common.smk). A no-op for the micro/default configs. `snakemake prefetch` runs just these.


rule prefetch_model:
    """Download a hub model's weights and tokenizer (nothing for micro/wheel/local models)."""
    localrule: True
    output:
        "results/prefetch/models/{model}.json",
    params:
        spec=get_model_spec,
    log:
        "results/logs/prefetch_model/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/prefetch.py"


rule prefetch_data:
    """Load a hub dataset once into the datasets cache (nothing for bundled/file data)."""
    localrule: True
    output:
        "results/prefetch/data/{dataset}.json",
    params:
        spec=config_keys("data", ("source", "id", "split")),
    log:
        "results/logs/prefetch_data/{dataset}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/prefetch.py"


rule prefetch_lm_eval:
    """Build lm-eval's registry tasks once, caching their data (nothing for the bundled tasks)."""
    localrule: True
    output:
        "results/prefetch/lm_eval.json",
    params:
        tasks=config["lm_eval"]["tasks"],
        task_dir=LM_EVAL_TASK_DIR,
    log:
        "results/logs/prefetch_lm_eval.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/prefetch.py"


rule prefetch:
    """Target: every download the config needs (run it on a login node before submitting)."""
    localrule: True
    input:
        expand("results/prefetch/models/{model}.json", model=MODELS),
        expand("results/prefetch/data/{dataset}.json", dataset=DATASET),
        "results/prefetch/lm_eval.json",
