# The plan of every fine-tuned method (AutoQRA, baselines, ablations) and the random-search
# baseline at AutoQRA's cost: random_propose -> random_evaluate(shard) -> random_select ->
# random_reevaluate(shard) -> random_pick (the same noise-robust pick as AutoQRA's).


rule random_propose:
    """Feasible plans drawn uniformly from the ladders: as many as AutoQRA's cost in HF-equivalents
    allows (its LF evaluations, Stage 2 and its pick included) after this search's own pick."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        autoqra_history=random_equal_cost_source,
    output:
        "results/random/{model}/hf.json",
    params:
        space=space_params(),
        n=config["random_search"]["evaluations"],
        refine=pick_params(),
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
        **forecast_resources("random_evaluate"),
    script:
        "../scripts/random_step.py"


rule random_select:
    """The random search's pick candidates (top-k by AutoQRA's utility and by HF score, filled)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        phase="results/random/{model}/hf.json",
        shards=get_random_shards,
    output:
        "results/random/{model}/pick/hf.json",
    params:
        space=space_params(),
        refine=pick_params(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_select/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/random_step.py"


rule random_reevaluate:
    """HF re-evaluation of one shard of the random pick's (candidate, fresh seed) pairs."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        phase="results/random/{model}/pick/hf.json",
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/random/{model}/pick/hf-shard{shard}.jsonl",
    params:
        space=space_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        shards=random_pick_shards(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_reevaluate/{model}/{shard}.log",
    benchmark:
        "results/benchmarks/random_reevaluate/{model}/{shard}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("random_reevaluate"),
    script:
        "../scripts/random_step.py"


rule random_pick:
    """The random search's plan (best mean HF score over the fresh seeds) and every random observation."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        phase="results/random/{model}/hf.json",
        shards=get_random_shards,
        pick="results/random/{model}/pick/hf.json",
        pick_shards=get_random_pick_shards,
    output:
        plan="results/random/{model}/plan.json",
        summary="results/random/{model}/summary.json",
    params:
        space=space_params(),
        refine=pick_params(),
        seed=config["seed"],
    priority: 5
    log:
        "results/logs/random_pick/{model}.log",
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
    """An optuna sampler (TPE by default) proposing plans one at a time, each evaluated at HF, at
    AutoQRA's cost; then the same noise-robust pick, and the pick at the held-out seed."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        autoqra_history=optuna_equal_cost_source,
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/optuna/{model}/summary.json",
    params:
        space=space_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        n=config["optuna_search"]["evaluations"],
        refine=pick_params(),
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
        **forecast_resources("optuna_search"),
    script:
        "../scripts/optuna_search.py"


rule methods_hf:
    """Every method's plan at HF fidelity at the held-out seed (used by no search): the scores the
    figures show, free of the searches' selection bias."""
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
        seed=heldout_seed(),
    log:
        "results/logs/methods_hf/{model}.log",
    benchmark:
        "results/benchmarks/methods_hf/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("methods_hf"),
    script:
        "../scripts/methods_hf.py"
