rule model_prepare:
    """Provision a base model as a plain HF directory (micro random Llama, offline SmolLM2, hub id, local dir)."""
    input:
        prefetched="results/prefetch/models/{model}.json",
    output:
        hf=directory("results/models/{model}/hf"),
    params:
        spec=get_model_spec,
        seed=config["seed"],
        code=code_sha("models", "manifest.py", "io.py"),
    # Between-workflow cache (snakemake --cache, $SNAKEMAKE_OUTPUT_CACHE): a base model is the same
    # for every experiment; the software stack is pinned by the code param and the spec's revision.
    # (A cached rule cannot have a benchmark file: its build time is in the manifest.)
    cache: "omit-software"
    log:
        "results/logs/model_prepare/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        **forecast_resources("model_prepare", gpu=False),
    script:
        "../scripts/model_prepare.py"
