# Final fine-tuning of every method's plan, one job per (model, method, seed).


rule finetune:
    """Full-fidelity LoRA fine-tuning of a method's plan; the adapter in peft format + a cost record."""
    input:
        model=rules.model_prepare.output.hf,
        plan="results/methods/{model}/{method}/plan.json",
        train=f"{DATA}/train.jsonl",
    output:
        adapter=directory("results/finetune/{model}/{method}/s{seed}/adapter"),
        record="results/finetune/{model}/{method}/s{seed}/train.json",
    params:
        settings=finetune_params(),
        cache_dir=config["cache_dir"],
        share=config["share_identical_runs"],
    priority: 1  # before methods_hf (figures only): the last method's chain ends the run
    log:
        "results/logs/finetune/{model}/{method}/s{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{method}/s{seed}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("finetune"),
    script:
        "../scripts/finetune.py"
