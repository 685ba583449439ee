# Stage 2: trust-region Bayesian refinement around the Stage-1 Pareto set, evaluated for real at HF:
# refine_propose(t) -> refine_evaluate(t, shard) -> refine_update(t) -> ... -> final_plan


rule refine_propose:
    """q candidates inside the trust region (log-EI on a Matern-5/2 GP of the utility)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        front=rules.search_front.output.front,
        previous=get_previous_update,
    output:
        "results/refine/{model}/{variant}/t{t}/hf.json",
    params:
        space=space_params(),
        refine=refine_params(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/refine_propose/{model}/{variant}/t{t}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/refine_step.py"


rule refine_evaluate:
    """HF evaluation of one shard of the Stage-2 candidates (the Stage-1 evaluation cache is shared)."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/refine/{model}/{variant}/t{t}/hf.json",
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/refine/{model}/{variant}/t{t}/hf-shard{shard}.jsonl",
    params:
        space=space_params(),
        refine=refine_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        shards=REFINE_SHARDS,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/refine_evaluate/{model}/{variant}/t{t}-{shard}.log",
    benchmark:
        "results/benchmarks/refine_evaluate/{model}/{variant}/t{t}-{shard}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
    script:
        "../scripts/refine_step.py"


rule refine_update:
    """Tell the HF scores; the radius grows after successes and shrinks after failures (TuRBO)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/refine/{model}/{variant}/t{t}/hf.json",
        shards=get_refine_shards,
    output:
        "results/refine/{model}/{variant}/t{t}/update.json",
    params:
        space=space_params(),
        refine=refine_params(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/refine_update/{model}/{variant}/t{t}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/refine_step.py"


rule final_plan:
    """The best feasible plan (utility) with its Stage-1/Stage-2 history."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        front=rules.search_front.output.front,
        last=get_last_update,
    output:
        plan="results/final/{model}/{variant}/plan.json",
        stage1_plan="results/final/{model}/{variant}/stage1_plan.json",
        history="results/final/{model}/{variant}/history.json",
    params:
        space=space_params(),
        refine=refine_params(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/final_plan/{model}/{variant}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/refine_step.py"
