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

# Jobs never download: the prefetch rules (localrules on the submit host, which lift this switch
# for themselves) fetch hub models, datasets and lm-eval task data into HF_HOME first. Set after
# validation, so that this process's own config checks still see the user's environment; jobs
# (local subprocesses and sbatch's --export=ALL) inherit it.
# Jobs in the conda env (--sdm conda) import autoqra from this checkout (AUTOQRA_SRC, see
# envs/autoqra.post-deploy.sh). Set, never read here: the envvars directive is for what users provide.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", AUTOQRA_SRC=str(Path(workflow.basedir) / "src"))
if any(m["source"] == "hub" for m in config["models"].values()):

    envvars:
        "HF_TOKEN",  # gated hub models (Llama 3); passed on to jobs by executors that do not inherit it


# torch threads per training/evaluation job, from the config (job_threads). Snakemake caps a job's
# threads at --cores where one is given (locally); on SLURM each job asks for as many CPUs
# (cpus_per_task = threads in profiles/slurm). workflow.cores is not read: it raises under a
# cluster executor run without --cores.
HEAVY_THREADS = config["job_threads"]
MODELS = sorted(config["models"])
DATASET = config["data"]["name"]
DATA = f"results/data/{DATASET}"
GENERATIONS = config["search"]["generations"]
SHARDS = config["search"]["shards"]  # the most evaluation jobs per phase; search_shards() gives each phase's
VARIANTS = sorted(config["search"]["variants"])
REFINE_ITERATIONS = config["refine"]["iterations"]
REFINE_SHARDS = min(config["refine"]["shards"], config["refine"]["q"])  # a job per candidate at most
METHODS = sorted(config["methods"])
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


# -- narrow params: a rule's params carry only the config keys it reads -------------------------
# (so that editing another key, e.g. one ablation or one method's label, does not rerun it; check
# with `snakemake -n --list-changes params`). Key lists follow what the library reads.
def config_keys(section, keys):
    """``config[section]`` cut down to ``keys`` (those present)."""
    part = config[section]
    return {k: part[k] for k in keys if k in part}


def _fields(cls):
    return tuple(cls.__dataclass_fields__)


def space_params(*extra):
    """What autoqra.pipeline.common.search_space reads (ladders, quantizer map, HQQ group size,
    axis and metadata bits), plus ``extra``."""
    return config_keys("search_space", ("bits", "ranks", "quantizers", "group_size", "hqq_axis", "meta_bits",
                                        *extra))


def search_params():
    """The search section as EvolutionSettings reads it (not the variants, not the shard count)."""
    from autoqra.search.evolution import EvolutionSettings

    return config_keys("search", _fields(EvolutionSettings))


def refine_params():
    """The refine section as TrustRegionSettings reads it (not the shard count)."""
    from autoqra.search.trust_region import TrustRegionSettings

    return config_keys("refine", _fields(TrustRegionSettings))


DATA_KEYS = ("name", "source", "path", "id", "split", "n_train", "n_val", "n_test", "skills", "general_text")


def get_method_spec(wildcards):
    """What decides a method's plan: not its label, table group or fine-tuning seeds."""
    spec = config["methods"][wildcards.method]
    return {k: v for k, v in spec.items() if k not in ("label", "group", "seeds")}


def method_groups():
    """method -> table group (methods_hf tags baselines with it; labels are the figures' business)."""
    return {m: spec["group"] for m, spec in config["methods"].items()}


def method_labels():
    """method -> display label (default: the method's name)."""
    return {m: spec["label"] or m for m, spec in config["methods"].items()}


def methods_unlabelled():
    """Every method's spec without its display label (for jobs whose outputs never show labels)."""
    return {m: {k: v for k, v in spec.items() if k != "label"} for m, spec in config["methods"].items()}


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


# -- evaluation shards: one GPU job per shard, never one with nothing to evaluate ----------------
def n_shards(candidates, shards):
    """Evaluation jobs for at most ``candidates`` candidates split ``shards`` ways: none for none."""
    return min(int(shards), int(candidates))


def search_shards(variant, g, phase):
    """Jobs of one Stage-1 phase: min(search.shards, the phase's candidates): the population at
    generation 0, then the offspring at LF and min(promote, offspring) at HF, no LF when single-fidelity."""
    from autoqra.pipeline.common import evolution_settings
    from autoqra.pipeline.search import phase_size

    settings = evolution_settings(config["search"], config["search"]["variants"][variant])
    return n_shards(phase_size(settings, int(g), phase), SHARDS)


def search_shard_files(model, variant, g, phase):
    return [f"results/search/{model}/{variant}/g{g}/{phase}-shard{k}.jsonl"
            for k in range(search_shards(variant, g, phase))]


def get_search_shards(wildcards):
    """The shard count of a search_evaluate job's phase (its candidates are split this many ways)."""
    return search_shards(wildcards.variant, wildcards.g, wildcards.phase)


def get_lf_shards(wildcards):
    return search_shard_files(wildcards.model, wildcards.variant, wildcards.g, "lf")


def get_hf_shards(wildcards):
    return search_shard_files(wildcards.model, wildcards.variant, wildcards.g, "hf")


def get_all_search_shards(wildcards):
    return [f for g in range(GENERATIONS + 1) for phase in ("lf", "hf")
            for f in search_shard_files(wildcards.model, wildcards.variant, g, phase)]


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
    """Only the sequential and oracle baselines read the priors (uniform baselines start before Stage 0 ends)."""
    if config["methods"][wildcards.method]["plan"] in ("sequential", "oracle"):
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
    return {k: config["refine"][k] for k in ("reevaluate_top_k", "reevaluate_seeds", "pick_seed_offset", "alpha")}


def refine_pick_params():
    """Stage 2's settings and the pick's: what a variant's final_candidates and final_plan read."""
    return {**refine_params(), **pick_params()}


def heldout_seed():
    """The seed of every HF score reported for a method (no plan was selected on it)."""
    from autoqra.search.pick import heldout_seed as _heldout

    return _heldout(config["seed"], config["refine"]["reevaluate_seeds"], config["refine"]["pick_seed_offset"])


def validation_examples():
    """Validation examples an evaluation scores (the cost model's eval term, autoqra.search.cost)."""
    return config["data"]["n_val"]


def stage0_cost_params():
    """What Stage 0 computes (its settings and the sequence length of the cost unit): charged to
    every AutoQRA variant in HF-equivalents (autoqra.search.cost.stage0_units)."""
    return {"settings": config["sensitivity"], "max_seq_len": config["data"]["max_seq_len"]}


def uses_optuna():
    return config["optuna_search"]["enabled"]


def random_shards():
    """Jobs of the random search: min(random_search.shards, its evaluations) when the config fixes
    them; at equal cost the count is AutoQRA's spend, known only at run time: random_search.shards."""
    n = config["random_search"]["evaluations"]
    return config["random_search"]["shards"] if n is None else n_shards(n, config["random_search"]["shards"])


def pick_pairs(groups):
    """The most (plan, seed) re-evaluations of a noise-robust pick: top-k by utility and top-k by
    HF score, per candidate group (the final pick and the Stage-1-only pick), at every fresh seed."""
    return 2 * groups * config["refine"]["reevaluate_top_k"] * config["refine"]["reevaluate_seeds"]


def pick_shards(variant):
    """Jobs of a variant's pick re-evaluation: min(refine.shards, its most (plan, seed) pairs)."""
    return n_shards(pick_pairs(2 if stage2_enabled(variant) else 1), config["refine"]["shards"])


def random_pick_shards():
    return n_shards(pick_pairs(1), config["random_search"]["shards"])


def get_random_shards(wildcards):
    return expand("results/random/{model}/hf-shard{shard}.jsonl", model=wildcards.model, shard=range(random_shards()))


def get_random_pick_shards(wildcards):
    return expand(
        "results/random/{model}/pick/hf-shard{shard}.jsonl", model=wildcards.model, shard=range(random_pick_shards())
    )


def get_pick_shards(wildcards):
    return expand(
        "results/final/{model}/{variant}/pick/hf-shard{shard}.jsonl",
        model=wildcards.model,
        variant=wildcards.variant,
        shard=range(pick_shards(wildcards.variant)),
    )


def get_pick_shard_count(wildcards):
    return pick_shards(wildcards.variant)


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
    keys = ("lr", "batch_size", "grad_accum", "warmup_steps", "warmup_ratio", "lr_schedule", "grad_checkpointing")
    train = {**config["training"], **{k: ft[k] for k in keys if k in ft}}
    if "warmup_ratio" in ft or "warmup_steps" in ft:  # finetune's warm-up replaces the training one
        train["warmup_steps"] = ft.get("warmup_steps", 0)
        train["warmup_ratio"] = ft.get("warmup_ratio")
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
        "docs": [f"results/lm_eval/{m}/{r}.docs.tsv" for m in MODELS for r in runs],
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


# -- cluster resources from the forecast (autoqra.forecast.resources) ----------------------------
# Per job: runtime (min), host mem_mb, gpu_mem_mb and the smallest GPU tier holding it (gpu_model),
# from the same work counts and device table as `autoqra forecast`, x1.5 safety, growing with each
# retry (attempt). Computed lazily: a rule's first job pays for the model's shape (never a download).
_SIZER = None


def job_sizer():
    global _SIZER
    if _SIZER is None:
        from autoqra.forecast.resources import JobSizer

        _SIZER = JobSizer(config, workdir=".")
    return _SIZER


def forecast_resources(rule, gpu=True):
    """The resources of ``rule``'s jobs as named callables of (wildcards, attempt)."""

    def runtime(wildcards, attempt):
        return job_sizer().runtime(rule, dict(wildcards.items()), attempt)

    def mem_mb(wildcards, attempt):
        return job_sizer().mem_mb(rule, dict(wildcards.items()), attempt)

    def gpu_mem_mb(wildcards, attempt):
        return job_sizer().gpu_mem_mb(rule, dict(wildcards.items()), attempt)

    def gpu_model(wildcards, attempt):
        return job_sizer().gpu_model(rule, dict(wildcards.items()), attempt)

    out = {"runtime": runtime, "mem_mb": mem_mb}
    if gpu:
        out.update(gpu_mem_mb=gpu_mem_mb, gpu_model=gpu_model)
    return out


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
