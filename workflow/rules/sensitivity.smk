rule sensitivity:
    """Stage 0: per-block importance priors, I_q (JSD at the lowest bit-width) and I_r (plasticity)."""
    input:
        model=rules.model_prepare.output.hf,
        train=f"{DATA}/train.jsonl",
    output:
        priors="results/sensitivity/{model}/priors.tsv",
        summary="results/sensitivity/{model}/correlations.json",
        manifest="results/sensitivity/{model}/manifest.json",
    params:
        settings=config["sensitivity"],
        space=space_params("lora_alpha_per_rank"),
        max_seq_len=config["data"]["max_seq_len"],
        cache_dir=config["cache_dir"],
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/sensitivity/{model}.log",
    benchmark:
        "results/benchmarks/sensitivity/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("sensitivity"),
    script:
        "../scripts/sensitivity.py"
