# Stage 2: trust-region Bayesian refinement around the Stage-1 Pareto set, evaluated for real at HF,
# then the noise-robust pick (re-evaluations at fresh seeds):
# refine_propose(t) -> refine_evaluate(t, shard) -> refine_update(t) -> ... -> final_candidates
#   -> final_evaluate(shard) -> final_plan


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
        **forecast_resources("refine_evaluate"),
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


rule final_candidates:
    """The noise-robust pick's candidates: top-k by utility and by HF score, filled to the budget,
    each to be re-evaluated at fresh seeds (also the Stage-1-only ones, for the w/o-Stage-2 method)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        front=rules.search_front.output.front,
        last=get_last_update,
    output:
        "results/final/{model}/{variant}/pick/hf.json",
    params:
        space=space_params(),
        refine=refine_pick_params(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/final_candidates/{model}/{variant}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/refine_step.py"


rule final_evaluate:
    """HF re-evaluation of one shard of the pick's (candidate, fresh seed) pairs."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/final/{model}/{variant}/pick/hf.json",
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/final/{model}/{variant}/pick/hf-shard{shard}.jsonl",
    params:
        space=space_params(),
        refine=refine_params(),
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        shards=get_pick_shard_count,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/final_evaluate/{model}/{variant}-{shard}.log",
    benchmark:
        "results/benchmarks/final_evaluate/{model}/{variant}-{shard}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("final_evaluate"),
    script:
        "../scripts/refine_step.py"


rule final_plan:
    """The best candidate by mean HF score over the fresh seeds (with its spread), the Stage-1-only
    pick, the Stage-1/Stage-2 history and the variant's cost in HF-equivalents."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        front=rules.search_front.output.front,
        last=get_last_update,
        pick=rules.final_candidates.output[0],
        pick_shards=get_pick_shards,
        stage1_shards=get_all_search_shards,
        refine_shards=get_all_refine_shards,
    output:
        plan="results/final/{model}/{variant}/plan.json",
        stage1_plan="results/final/{model}/{variant}/stage1_plan.json",
        history="results/final/{model}/{variant}/history.json",
    params:
        space=space_params(),
        refine=refine_pick_params(),
        n_val=validation_examples(),
        stage0=stage0_cost_params(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/final_plan/{model}/{variant}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/refine_step.py"
