# Benchmarks of every fine-tuned method with lm-evaluation-harness, one job per (model, method, seed).


rule lm_eval:
    """lm-eval's simple_evaluate on the model rebuilt with autoqra.load (quantized base + adapter)."""
    input:
        model=rules.model_prepare.output.hf,
        plan="results/methods/{model}/{method}/plan.json",
        adapter="results/finetune/{model}/{method}/s{seed}/adapter",
        test=f"{DATA}/test.jsonl",
        prefetched="results/prefetch/lm_eval.json",
        general=f"{DATA}/general_heldout.jsonl",
    output:
        result="results/lm_eval/{model}/{method}/s{seed}.json",
        docs="results/lm_eval/{model}/{method}/s{seed}.docs.tsv",
    params:
        lm_eval=config["lm_eval"],
        task_dir=LM_EVAL_TASK_DIR,
        cache_dir=config["cache_dir"],
        share=config["share_identical_runs"],
        work_dir=lambda wc: f"results/lm_eval/{wc.model}/{wc.method}/s{wc.seed}.work",
    priority: 1  # before methods_hf (figures only): the last method's chain ends the run
    log:
        "results/logs/lm_eval/{model}/{method}/s{seed}.log",
    benchmark:
        "results/benchmarks/lm_eval/{model}/{method}/s{seed}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("lm_eval"),
    script:
        "../scripts/lm_eval.py"
