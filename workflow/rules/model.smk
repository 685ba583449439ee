rule model_prepare:
    """Provision a base model as a plain HF directory (micro random Llama, offline SmolLM2, hub id, local dir)."""
    output:
        config="results/models/{model}/hf/config.json",
        manifest="results/models/{model}/hf/manifest.json",
    params:
        spec=get_model_spec,
        seed=config["seed"],
    log:
        "results/logs/model_prepare/{model}.log",
    benchmark:
        "results/benchmarks/model_prepare/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
    script:
        "../scripts/model_prepare.py"
