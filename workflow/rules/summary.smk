# Tidy result tables from every fine-tuning record, lm-eval output and search.


rule summarize:
    """results/summary/*.tsv: per-run results, mean/std over seeds, search cost per stage, per-document
    values and their paired bootstrap intervals."""
    localrule: True
    input:
        unpack(get_summary_inputs),
    output:
        results="results/summary/results.tsv",
        aggregate="results/summary/aggregate.tsv",
        search_cost="results/summary/search_cost.tsv",
        docs="results/summary/docs.tsv",
        uncertainty="results/summary/uncertainty.tsv",
        manifest="results/summary/manifest.json",
    params:
        methods=config["methods"],
        models=MODELS,
        variants=VARIANTS,
    log:
        "results/logs/summarize.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/summarize.py"
