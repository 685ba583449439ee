# Helpers, config validation and wildcard constraints. No rules here.
import os
import sys
from pathlib import Path

from autoqra.config import validate_config
from autoqra.manifest import code_sha
from autoqra.errors import ConfigError

try:
    # Schema + semantic checks (files exist, budget feasible) before any job; defaults are filled
    # in place so every rule sees the complete config.
    _validated = validate_config(config, base_dir=workflow.basedir)
except ConfigError as e:
    sys.exit(f"autoqra: {e}")
config.clear()
config.update(_validated)

# Nothing downloads at run time unless the config names a hub model or dataset (paper scale).
if "hub" not in {m["source"] for m in config["models"].values()} | {config["data"]["source"]}:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# torch threads per training/evaluation job (config job_threads, capped by --cores): on a small CPU
# one thread per job and one job per core is fastest; profiles may override with set-threads.
HEAVY_THREADS = max(1, min(int(workflow.cores or 1), config["job_threads"]))
MODELS = sorted(config["models"])
DATASET = config["data"]["name"]
DATA = f"results/data/{DATASET}"
GENERATIONS = config["search"]["generations"]
SHARDS = config["search"]["shards"]
VARIANTS = sorted(config["search"]["variants"])
REFINE_ITERATIONS = config["refine"]["iterations"]
REFINE_SHARDS = config["refine"]["shards"]
METHODS = sorted(config["methods"])
RANDOM_SHARDS = config["random_search"]["shards"]
LM_EVAL_TASK_DIR = str(Path(workflow.basedir) / "workflow" / "resources" / "lm_eval_tasks")


wildcard_constraints:
    model="|".join(MODELS),
    dataset=DATASET,
    variant="|".join(VARIANTS),
    g=r"\d+",
    shard=r"\d+",
    phase="lf|hf",
    t=r"\d+",
    method="|".join(METHODS),
    seed=r"\d+",


def get_model_spec(wildcards):
    return config["models"][wildcards.model]


def get_data_inputs(wildcards):
    """The local dataset file (if any), so that editing it re-runs data_prepare."""
    if config["data"]["source"] == "alpaca_file":
        return [config["data"]["path"]]
    return []


def evaluator_params():
    """Config sections every evaluation depends on (a change re-runs the evaluations)."""
    from autoqra.pipeline.common import evaluator_params as _params

    return _params(config)


def get_variant(wildcards):
    return config["search"]["variants"][wildcards.variant]


def get_previous_select(wildcards):
    """The selection state of generation g-1 (none for the initial population)."""
    g = int(wildcards.g)
    if g == 0:
        return []
    return f"results/search/{wildcards.model}/{wildcards.variant}/g{g - 1}/select.json"


def get_phase_shards(wildcards, phase):
    return expand(
        "results/search/{model}/{variant}/g{g}/{phase}-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        g=wildcards.g,
        phase=phase,
        shard=range(SHARDS),
    )


def get_lf_shards(wildcards):
    return get_phase_shards(wildcards, "lf")


def get_hf_shards(wildcards):
    return get_phase_shards(wildcards, "hf")


def get_all_search_shards(wildcards):
    return expand(
        "results/search/{model}/{variant}/g{g}/{phase}-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        g=range(GENERATIONS + 1),
        phase=("lf", "hf"),
        shard=range(SHARDS),
    )


def get_last_select(wildcards):
    return f"results/search/{wildcards.model}/{wildcards.variant}/g{GENERATIONS}/select.json"


def stage2_enabled(variant):
    return config["search"]["variants"][variant].get("stage2", True) and REFINE_ITERATIONS > 0


def get_previous_update(wildcards):
    t = int(wildcards.t)
    if t == 0:
        return []
    return f"results/refine/{wildcards.model}/{wildcards.variant}/t{t - 1}/update.json"


def get_refine_shards(wildcards):
    return expand(
        "results/refine/{model}/{variant}/t{t}/hf-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        t=wildcards.t,
        shard=range(REFINE_SHARDS),
    )


def get_last_update(wildcards):
    """The last Stage-2 state, or nothing for variants without Stage 2."""
    if not stage2_enabled(wildcards.variant):
        return []
    return f"results/refine/{wildcards.model}/{wildcards.variant}/t{REFINE_ITERATIONS - 1}/update.json"


def method_seeds(method):
    return config["methods"][method]["seeds"] or config["finetune"]["seeds"]


def get_method_source_plan(wildcards):
    """The plan file a search/random method takes its plan from (nothing for uniform/sequential)."""
    spec = config["methods"][wildcards.method]
    if spec["plan"] == "search":
        name = "plan.json" if spec["stage2"] else "stage1_plan.json"
        return f"results/final/{wildcards.model}/{spec['variant']}/{name}"
    if spec["plan"] == "random":
        return f"results/random/{wildcards.model}/plan.json"
    return []


def get_method_priors(wildcards):
    """Only the sequential baseline reads the priors (uniform baselines start before Stage 0 ends)."""
    if config["methods"][wildcards.method]["plan"] == "sequential":
        return f"results/sensitivity/{wildcards.model}/priors.tsv"
    return []


def random_equal_cost_source(wildcards):
    """AutoQRA's history (its cost in HF-equivalents) for the equal-cost random search, unless the
    config fixes its evaluation count."""
    if config["random_search"]["evaluations"] is not None:
        return []
    return f"results/final/{wildcards.model}/autoqra/history.json"


def optuna_equal_cost_source(wildcards):
    if config["optuna_search"]["evaluations"] is not None:
        return []
    return f"results/final/{wildcards.model}/autoqra/history.json"


def pick_params():
    """The noise-robust pick's settings (refine.reevaluate_top_k / reevaluate_seeds), the search's
    seed and the Stage-2 utility they rank by."""
    return {k: config["refine"][k] for k in ("reevaluate_top_k", "reevaluate_seeds", "alpha")}


def heldout_seed():
    """The seed of every HF score reported for a method (no plan was selected on it)."""
    from autoqra.search.pick import heldout_seed as _heldout

    return _heldout(config["seed"], config["refine"]["reevaluate_seeds"])


def validation_examples():
    """Validation examples an evaluation scores (the cost model's eval term, autoqra.search.cost)."""
    return config["data"]["n_val"]


def uses_optuna():
    return config["optuna_search"]["enabled"]


def get_random_shards(wildcards):
    return expand("results/random/{model}/hf-shard{shard}.jsonl", model=wildcards.model, shard=range(RANDOM_SHARDS))


def get_random_pick_shards(wildcards):
    return expand(
        "results/random/{model}/pick/hf-shard{shard}.jsonl", model=wildcards.model, shard=range(RANDOM_SHARDS)
    )


def get_pick_shards(wildcards):
    return expand(
        "results/final/{model}/{variant}/pick/hf-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        shard=range(REFINE_SHARDS),
    )


def get_all_refine_shards(wildcards):
    """Every Stage-2 evaluation shard of a variant (none without Stage 2): its cost."""
    if not stage2_enabled(wildcards.variant):
        return []
    return expand(
        "results/refine/{model}/{variant}/t{t}/hf-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        t=range(REFINE_ITERATIONS),
        shard=range(REFINE_SHARDS),
    )


def finetune_params():
    """Training settings of the final fine-tuning: the 'training' section overridden by 'finetune'."""
    ft = config["finetune"]
    keys = ("lr", "batch_size", "grad_accum", "warmup_steps", "lr_schedule", "grad_checkpointing")
    train = {**config["training"], **{k: ft[k] for k in keys if k in ft}}
    fid = {k: ft[k] for k in ("steps", "data_fraction", "epochs") if k in ft}
    return {"training": train, "fidelity": fid, "max_seq_len": config["data"]["max_seq_len"],
            "lora_dropout": config["search_space"]["lora_dropout"],
            "alpha_per_rank": config["search_space"]["lora_alpha_per_rank"]}


def all_method_runs():
    """(method, seed) pairs as path fragments ``{method}/s{seed}``."""
    return [f"{m}/s{s}" for m in METHODS for s in method_seeds(m)]


def get_summary_inputs(wildcards):
    runs = all_method_runs()
    return {
        "train": [f"results/finetune/{m}/{r}/train.json" for m in MODELS for r in runs],
        "lm_eval": [f"results/lm_eval/{m}/{r}.json" for m in MODELS for r in runs],
        "plans": [f"results/methods/{m}/{meth}/plan.json" for m in MODELS for meth in METHODS],
        "fronts": [f"results/search/{m}/{v}/front.json" for m in MODELS for v in VARIANTS],
        "histories": [f"results/final/{m}/{v}/history.json" for m in MODELS for v in VARIANTS],
        "random": [f"results/random/{m}/summary.json" for m in MODELS if uses_random()],
        "optuna": [f"results/optuna/{m}/summary.json" for m in MODELS if uses_optuna()],
        "sensitivity": [f"results/sensitivity/{m}/correlations.json" for m in MODELS],
    }


def uses_random():
    return any(s["plan"] == "random" for s in config["methods"].values())


def fig3_heldout_methods():
    """The methods whose held-out HF score marks each searcher's pick in Figure 3."""
    out = {}
    for name, spec in config["methods"].items():
        if spec["plan"] == "search" and spec.get("variant") == "autoqra" and spec.get("stage2", True):
            out.setdefault("autoqra", name)
        if spec["plan"] == "random":
            out.setdefault("random", name)
    return out


def paper_outputs():
    """Every file the paper rules write, for all models (Figure 1 only with a random method)."""
    from autoqra.report import paper_targets

    return paper_targets(MODELS, with_random=uses_random())


def get_final_output():
    out = []
    out += expand("results/data/{dataset}/manifest.json", dataset=DATASET)
    out += expand("results/memory/{model}/budget.json", model=MODELS)
    out += expand("results/sensitivity/{model}/priors.tsv", model=MODELS)
    out += expand("results/final/{model}/{variant}/plan.json", model=MODELS, variant=VARIANTS)
    out += ["results/summary/results.tsv"]
    out += expand("results/methods_hf/{model}.tsv", model=MODELS)
    out += paper_outputs()  # the paper rule's files: tables and figures
    return out
