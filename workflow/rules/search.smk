# Stage 1: the multi-fidelity evolutionary search, one chain of jobs per (model, variant). Search
# chains run before fine-tuning jobs (priority): they are the long serial path of the DAG.
# propose(g) -> evaluate(g, lf, shard) -> promote(g) -> evaluate(g, hf, shard) -> select(g) -> ...


rule search_reference:
    """The hypervolume reference point every search variant of the model shares, fixed before any
    search runs: the HF scores of the smallest plan and of the budget's uniform plan, minus a margin."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/search/{model}/hv_reference.json",
    params:
        space=space_params(),
        hv_ref_score=config["search"]["hv_ref_score"],
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_reference/{model}.log",
    benchmark:
        "results/benchmarks/search_reference/{model}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("search_reference"),
    script:
        "../scripts/search_reference.py"


rule search_propose:
    """Offspring of generation g (the warm-started initial population for g = 0)."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        hv_reference=rules.search_reference.output[0],
        previous=get_previous_select,
    output:
        "results/search/{model}/{variant}/g{g}/lf.json",
    params:
        space=space_params(),
        search=search_params(),
        variant=get_variant,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_propose/{model}/{variant}/g{g}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/search_step.py"


rule search_evaluate:
    """Evaluate one shard of a phase's candidates (LF or HF) with the cached evaluator."""
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/search/{model}/{variant}/g{g}/{phase}.json",
        train=f"{DATA}/train.jsonl",
        validation=f"{DATA}/validation.jsonl",
    output:
        "results/search/{model}/{variant}/g{g}/{phase}-shard{shard}.jsonl",
    params:
        space=space_params(),
        search=search_params(),
        variant=get_variant,
        evaluator=evaluator_params(),
        cache_dir=config["cache_dir"],
        shards=get_search_shards,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_evaluate/{model}/{variant}/g{g}-{phase}-{shard}.log",
    benchmark:
        "results/benchmarks/search_evaluate/{model}/{variant}/g{g}-{phase}-{shard}.tsv"
    conda:
        "../../envs/autoqra.yaml"
    threads: HEAVY_THREADS
    resources:
        gpu=1,
        **forecast_resources("search_evaluate"),
    script:
        "../scripts/search_evaluate.py"


rule search_promote:
    """Tell the LF scores; the performance model picks the offspring promoted to HF."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/search/{model}/{variant}/g{g}/lf.json",
        shards=get_lf_shards,
    output:
        "results/search/{model}/{variant}/g{g}/hf.json",
    params:
        space=space_params(),
        search=search_params(),
        variant=get_variant,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_promote/{model}/{variant}/g{g}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/search_step.py"


rule search_select:
    """Tell the HF scores; constrained non-dominated sorting + crowding keeps the population."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        phase="results/search/{model}/{variant}/g{g}/hf.json",
        shards=get_hf_shards,
    output:
        "results/search/{model}/{variant}/g{g}/select.json",
    params:
        space=space_params(),
        search=search_params(),
        variant=get_variant,
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_select/{model}/{variant}/g{g}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/search_step.py"


rule search_front:
    """The Stage-1 Pareto front, every evaluation record and the hypervolume per generation."""
    localrule: True
    input:
        model=rules.model_prepare.output.hf,
        budget=rules.memory_budget.output.budget,
        priors=rules.sensitivity.output.priors,
        last=get_last_select,
        shards=get_all_search_shards,
    output:
        front="results/search/{model}/{variant}/front.json",
        records="results/search/{model}/{variant}/records.tsv",
        hypervolume="results/search/{model}/{variant}/hypervolume.tsv",
        manifest="results/search/{model}/{variant}/manifest.json",
    params:
        space=space_params(),
        search=search_params(),
        variant=get_variant,
        n_val=validation_examples(),
        seed=config["seed"],
    priority: 10
    log:
        "results/logs/search_front/{model}/{variant}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/search_step.py"
