rule memory_budget:
    """Resolve the memory budget for a model and tabulate the reference plans against it."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
    output:
        budget="results/memory/{model}/budget.json",
        table="results/memory/{model}/reference_plans.tsv",
    params:
        space=space_params(),
        budget=config["budget"],
    log:
        "results/logs/memory_budget/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/memory_budget.py"
