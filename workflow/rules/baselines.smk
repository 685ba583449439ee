# The plan of every fine-tuned method (AutoQRA, baselines, ablations) and the random-search
# baseline: random_propose -> random_evaluate(shard) -> random_select.


rule random_propose:
    """Feasible plans drawn uniformly from the ladders (as many HF evaluations as AutoQRA spends)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
    output:
        "results/random/{model}/hf.json",
    params:
        space=space_params(),
        n=random_evaluations(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_propose/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/random_step.py"


rule random_evaluate:
    """HF evaluation of one shard of the random plans (shares the evaluation cache with the searches)."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        phase="results/random/{model}/hf.json",
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/random/{model}/hf-shard{shard}.jsonl",
    params:
        space=space_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        shards=random_shards(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_evaluate/{model}/{shard}.log",
    benchmark:
        "results/benchmarks/random_evaluate/{model}/{shard}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
    script:
        "../scripts/random_step.py"


rule random_select:
    """The best random plan by AutoQRA's utility, and every random observation."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/random/{model}/hf.json",
        shards=get_random_shards,
    output:
        plan="results/random/{model}/plan.json",
        summary="results/random/{model}/summary.json",
    params:
        space=space_params(),
        refine=refine_params(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_select/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/random_step.py"


rule method_plan:
    """The plan a method fine-tunes: a search's final plan, a uniform/sequential baseline or the random best."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=get_method_priors,
        source=get_method_source_plan,
    output:
        "results/methods/{model}/{method}/plan.json",
    params:
        spec=get_method_spec,
        space=space_params(),
        seed=config["seed"],
    log:
        "results/logs/method_plan/{model}/{method}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/method_plan.py"


rule optuna_search:
    """An optuna sampler (TPE by default) proposing plans one at a time, each evaluated at HF."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/optuna/{model}/summary.json",
    params:
        space=space_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        n=optuna_evaluations(),
        sampler=config["optuna_search"]["sampler"],
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/optuna_search/{model}.log",
    benchmark:
        "results/benchmarks/optuna_search/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
    script:
        "../scripts/optuna_search.py"


rule methods_hf:
    """Every method's plan at HF fidelity (cached for search plans): baselines on the search's scale."""
    input:
        model=rules.model_prepare.output.hf,
        plans=expand("results/methods/{{model}}/{method}/plan.json", method=METHODS),
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/methods_hf/{model}.tsv",
    params:
        groups=method_groups(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        seed=config["seed"],
    log:
        "results/logs/methods_hf/{model}.log",
    benchmark:
        "results/benchmarks/methods_hf/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
    script:
        "../scripts/methods_hf.py"
