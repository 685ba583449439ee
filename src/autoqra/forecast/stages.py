"""The DAG of one model as a list of phases (autoqra.forecast.work.Phase), in the order of its long path."""

from __future__ import annotations

from collections.abc import Mapping

from autoqra.forecast.work import Phase, Work, eval_work, finetune_work, lm_eval_work, seq_tokens
from autoqra.search.cost import equal_cost_evaluations, evaluation_units, stage0_units

# The noise-robust pick re-evaluates the top-k by utility and the top-k by HF score, for the final and the
# Stage-1 plan, at each pick seed: at most 2 x groups x k x seeds (plan, seed) pairs, known at run time.
# Measured here: 6, 8 and 6 of 16 (the study's b4, b35 and b3, benchmarks/results/study/*/results/final).
PICK_FRACTION = (6 + 8 + 6) / 3 / 16
PICK_SOURCE = "measured: 6.7 of 16 pairs on average over the study's three budgets; the lists mostly overlap"


def _ceil_div(a: int, b: int) -> int:
    return -(-int(a) // max(1, int(b)))


def _stage2(cfg: Mapping, variant: str) -> bool:
    return bool(cfg["search"]["variants"][variant].get("stage2", True)) and int(cfg["refine"]["iterations"]) > 0


def _units(cfg: Mapping, w: Work) -> float:
    L, _ = seq_tokens(cfg)
    return evaluation_units(w.train_tokens / L, 1, w.score_tokens / L)


def search_phases(cfg: Mapping, variant: str, shape) -> tuple[list[Phase], dict]:
    """Stage 1 (generation x fidelity) and Stage 2 of one variant, with its spend in evaluations."""
    from autoqra.pipeline.common import evolution_settings
    from autoqra.pipeline.search import phase_size

    s = evolution_settings(cfg["search"], cfg["search"]["variants"][variant])
    shards = int(cfg["search"]["shards"])
    lf, hf = eval_work(cfg, "lf"), eval_work(cfg, "hf")
    out, n = [], {"lf": 0, "hf": 0}
    for g in range(int(cfg["search"]["generations"]) + 1):
        for fid, w in (("lf", lf), ("hf", hf)):
            k = phase_size(s, g, fid)
            if k == 0:
                continue
            jobs = min(shards, k)
            n[fid] += k
            # the warm start's generation 0 holds the budget's uniform plan, which search_reference has
            # already scored at HF and the search seed: read from the evaluation cache, not trained again
            computed = k - 1 if (g == 0 and fid == "hf" and s.warm_start and k > 1) else k
            out.append(Phase(f"Stage 1 g{g} {fid.upper()}", "search_evaluate", jobs,
                             w.scaled(_ceil_div(computed, jobs))))
    if _stage2(cfg, variant):
        q, rs = int(cfg["refine"]["q"]), int(cfg["refine"]["shards"])
        jobs = min(rs, q)
        for t in range(int(cfg["refine"]["iterations"])):
            out.append(Phase(f"Stage 2 t{t}", "refine_evaluate", jobs, hf.scaled(_ceil_div(q, jobs))))
            n["hf"] += q
    groups = 2 if _stage2(cfg, variant) else 1
    bound = 2 * groups * int(cfg["refine"]["reevaluate_top_k"]) * int(cfg["refine"]["reevaluate_seeds"])
    jobs = min(int(cfg["refine"]["shards"]), bound)  # the DAG's jobs: sized by the bound
    # the final plan's pick is part of the spend (autoqra.search.cost.stage_costs: its (plan, seed) pairs,
    # top-k x seeds when the top-k by utility and by HF score overlap, as they mostly do)
    n["hf"] += int(cfg["refine"]["reevaluate_top_k"]) * int(cfg["refine"]["reevaluate_seeds"])
    expected = PICK_FRACTION * bound
    out.append(Phase("Picks", "final_evaluate", jobs, hf.scaled(expected / jobs),
                     notes=[f"expected {expected:.1f} of at most {bound} (plan, seed) pairs ({PICK_SOURCE})"]))
    spend = (n["lf"] * _units(cfg, lf) + n["hf"] * _units(cfg, hf)) / _units(cfg, hf)
    return out, {"evaluations": n, "hf_equivalents": spend}


def model_phases(cfg: Mapping, shape, read_back: Mapping | None = None) -> list[Phase]:
    """Every GPU-rule phase of one model: Stage 0, the searches, baselines, fine-tuning, lm-eval.
    ``on_path`` marks the phases of the long serial path (the autoqra variant's chain, then the
    random search, then one method's fine-tuning and lm-eval).

    ``read_back``: what an earlier run left in the shared cache_dir (a study's later runs):
    ``stage0`` (bool), ``variants`` (searches whose evaluations are all cached), ``methods`` (whose
    fine-tunes and lm-eval runs are copies, autoqra.runstore); their phases get no jobs."""
    rb = dict(read_back or {})
    cached_variants, cached_methods = set(rb.get("variants", ())), set(rb.get("methods", ()))
    n_blocks = shape.n_blocks
    per_block = shape.block_weight_params
    rungs = len(set(cfg["search_space"]["bits"]))
    sens = cfg["sensitivity"]
    L, _ = seq_tokens(cfg)
    calib = int(sens["n_calib"]) * int(sens["calib_len"])
    grad_tokens = int(sens["grad_batches"]) * int(sens.get("batch_size", 4)) * min(L, int(sens.get("max_seq_len", 256)))
    if sens.get("plasticity", "grad_norm") == "loss_drop":
        grad_tokens *= n_blocks * (int(sens.get("loss_drop_steps", 10)) + 1)
    stage0 = Work(train_tokens=grad_tokens, score_tokens=(n_blocks + 1) * calib, steps=int(sens["grad_batches"]),
                  builds=2, quantize_weights=n_blocks * per_block,
                  checkpointing=bool(sens.get("grad_checkpointing")))
    hf = eval_work(cfg, "hf")
    ref = hf.scaled(2)
    ref.quantize_weights = n_blocks * per_block * (rungs - 1)  # the other rungs' first quantization
    s0_jobs = 0 if rb.get("stage0") else 1
    phases = [Phase("Stage 0", "sensitivity", s0_jobs, stage0, plan="stage0"),
              Phase("Stage 0", "search_reference", s0_jobs, ref, on_path=False)]
    spend = None
    for v in sorted(cfg["search"]["variants"]):
        ph, info = search_phases(cfg, v, shape)
        for p in ph:
            p.on_path = v == "autoqra" or (len(cfg["search"]["variants"]) == 1)
            if v in cached_variants:
                p.jobs = 0
        phases += ph
        if v == "autoqra":  # + Stage 0, charged as the pipeline does (autoqra.search.cost.charge_stage0)
            s0 = stage0_units(sens, n_blocks, int(cfg["data"]["max_seq_len"]))["units"]
            spend = info["hf_equivalents"] + s0 / _units(cfg, hf)
    methods = cfg["methods"]
    has_random = any(m["plan"] == "random" for m in methods.values())
    if has_random:
        # as autoqra.pipeline.methods.equal_cost_budget: the total less the baseline's own pick pairs
        pairs = int(cfg["refine"]["reevaluate_top_k"]) * int(cfg["refine"]["reevaluate_seeds"])
        total = cfg["random_search"]["evaluations"] or equal_cost_evaluations(spend or 1)
        n = max(1, int(total) - pairs)
        jobs = min(int(cfg["random_search"]["shards"]), n)
        note = [] if cfg["random_search"]["evaluations"] else [f"equal cost: AutoQRA's {spend:.1f} HF-equivalents"]
        phases.append(Phase("Baselines: random search", "random_evaluate", jobs, hf.scaled(_ceil_div(n, jobs)),
                            notes=note))
        jobs = min(int(cfg["random_search"]["shards"]), 2 * pairs)
        phases.append(Phase("Baselines: random search", "random_reevaluate", jobs, hf.scaled(_ceil_div(pairs, jobs))))
    if cfg["optuna_search"]["enabled"]:
        n = cfg["optuna_search"].get("evaluations") or equal_cost_evaluations(spend or 1)
        phases.append(Phase("Baselines: optuna", "optuna_search", 1, hf.scaled(n), on_path=False))
    runs = [(m, s) for m in sorted(methods) if m not in cached_methods
            for s in (methods[m].get("seeds") or cfg["finetune"]["seeds"])]
    # every method's plan at HF at the held-out seed (a plan two methods share is evaluated once: known
    # only at run time, so this is the bound)
    phases.append(Phase("Baselines: methods at HF", "methods_hf", 1, hf.scaled(len(methods)), plan="16bit",
                        on_path=False))
    ft = [finetune_work(cfg, m) for m, _ in runs]
    longest = max(range(len(ft)), key=lambda i: ft[i].train_tokens)
    # All fine-tunings go out together; the path holds one of them (the longest).
    phases.append(Phase("Fine-tuning", "finetune", len(runs), _mean(ft), plan="16bit",
                        notes=[f"{len(runs)} runs (methods x seeds), longest {runs[longest][0]}"]))
    lm, notes = lm_eval_work(cfg)
    phases.append(Phase("lm-eval", "lm_eval", len(runs), lm, plan="lm_eval", notes=notes))
    return phases


def _mean(ws: list[Work]) -> Work:
    k = 1.0 / len(ws)
    return Work(sum(w.train_tokens for w in ws) * k, sum(w.score_tokens for w in ws) * k,
                sum(w.steps for w in ws) * k, sum(w.builds for w in ws) * k,
                sum(w.quantize_weights for w in ws) * k, any(w.checkpointing for w in ws))
