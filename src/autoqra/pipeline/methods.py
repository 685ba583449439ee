"""The plan every fine-tuned method uses (rule method_plan) and the random-search baseline
(rules random_propose → search_evaluate-style shards → random_select).

A method is a config entry ``{plan: search|uniform|sequential|random, ...}``:
- ``search``: the final plan of a search variant (``variant``); ``stage2: false`` takes the
  Stage-1 pick of that variant instead (the "no Stage 2" ablation shares the variant's Stage 1);
- ``uniform``: ``bits``/``rank`` in every block (``quantizer`` defaults to the search space's
  quantizer for ``bits``, ``none`` at 16);
- ``sequential``: mixed bits from the raw ``I_q`` under the budget, then uniform ``rank``;
- ``random``: the plan of the random search, which spends the evaluation cost AutoQRA spent
  (HF-equivalents, its own noise-robust pick included);
- ``oracle``: the exact optimum of the additive per-block damage model under the budget
  (``autoqra.pipeline.oracle``);
- ``base``: the 16-bit base model, not fine-tuned (rule finetune saves the adapter untrained), the
  reference that fine-tuning must beat.

Also the optuna baseline searcher (rule optuna_search, for the search-efficiency figure, at the same
cost) and the HF scores of every method's plan at a held-out seed (rule methods_hf, for the Pareto
figure).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoqra.baselines import random_genomes, sequential_genome, uniform_plan
from autoqra.io import atomic_write_json, read_json
from autoqra.manifest import build_manifest
from autoqra.pipeline.common import load_raw_iq, reference_rank, search_space, trust_region_settings
from autoqra.pipeline.pick import candidate_phase, choose, pick_offset, pick_records, pick_settings
from autoqra.plan import Plan
from autoqra.search.cost import equal_cost_evaluations
from autoqra.search.pick import heldout_seed
from autoqra.search.space import SearchSpace
from autoqra.search.trust_region import TrustRegionSearch

RANDOM_SEED_OFFSET = 7919  # the random search draws from its own stream, not the evolutionary search's


def equal_cost_budget(n: int | None, history_json: str | os.PathLike | None, refine_cfg: Mapping[str, Any],
                      seed: int) -> dict:
    """How many HF evaluations a baseline searcher proposes: ``n`` (config) or the HF-equivalents
    AutoQRA actually spent (its history's cost: LF, Stage 2 and the pick's re-evaluations included),
    minus the re-evaluations of the baseline's own noise-robust pick, which it pays for the same way."""
    k, seeds = pick_settings(refine_cfg, seed)
    if n is None:
        if history_json is None:
            raise ValueError("equal-cost baseline: needs AutoQRA's history.json when no evaluation count is set")
        spent = read_json(history_json)["cost"]["total"]["hf_equivalents"]
        total, source = equal_cost_evaluations(spent), "autoqra_cost"
    else:
        spent, total, source = None, int(n), "config"
    return {"total": total, "proposals": max(1, total - k * len(seeds)), "pick_evaluations": k * len(seeds),
            "autoqra_hf_equivalents": spent, "source": source}


def _pick_phase(space: SearchSpace, genomes: list, scores: list, refine_cfg: Mapping, seed: int) -> tuple:
    """The searcher's utility (AutoQRA's, normalised on the searcher's own Pareto set) and its pick
    phase file; the fill uses flat priors (baseline searchers get no sensitivity priors)."""
    obs = [(g, s, space.memory(g)) for g, s in zip(genomes, scores, strict=True)]
    flat = np.full(space.n_blocks, 0.5)
    tr = TrustRegionSearch(space, flat, flat, trust_region_settings(refine_cfg, iterations=0), seed, obs)
    utils = [None if sc is None else tr.utility(sc, m) for _, sc, m in obs]
    k, seeds = pick_settings(refine_cfg, seed)
    return tr, candidate_phase(space, genomes, scores, utils, k, seeds, flat, flat)


def method_plan(spec: Mapping[str, Any], model_dir: str | os.PathLike, space_cfg: Mapping[str, Any],
                budget_json: str | os.PathLike, priors_tsv: str | os.PathLike | None,
                source_plan: str | os.PathLike | None, out: str | os.PathLike, *, method: str,
                manifest_config: Mapping | None = None, seed: int = 0) -> Plan:
    """Write the plan of method ``method`` (config entry ``spec``) and return it."""
    space = search_space(model_dir, space_cfg, budget_json)
    kind = spec["plan"]
    if kind in ("search", "random"):
        if source_plan is None:
            raise ValueError(f"method {method!r}: plan kind {kind!r} needs the plan its search wrote")
        plan = Plan.load(source_plan)
    elif kind == "base":  # the untuned 16-bit model: a zero-initialised adapter that is never trained
        plan = uniform_plan(space.n_blocks, 16, spec.get("rank") or space.ranks[0], "none", space.group_size)
    elif kind == "uniform":
        quantizer = spec.get("quantizer") or space.quantizers[spec["bits"]]
        plan = uniform_plan(space.n_blocks, spec["bits"], spec["rank"], quantizer, space.group_size, space.hqq_axis,
                            space.meta_bits)
    elif kind == "sequential":
        if priors_tsv is None:
            raise ValueError(f"method {method!r}: plan kind 'sequential' needs the Stage-0 priors")
        plan = space.to_plan(sequential_genome(space, load_raw_iq(priors_tsv, space.n_blocks), spec["rank"]))
    elif kind == "oracle":
        from autoqra.pipeline.oracle import oracle_plan_genome

        if priors_tsv is None:
            raise ValueError(f"method {method!r}: plan kind 'oracle' needs the Stage-0 priors")
        g, info = oracle_plan_genome(spec, space, load_raw_iq(priors_tsv, space.n_blocks),
                                     reference_rank(budget_json, space))
        plan = space.to_plan(g, meta={"oracle": info})
    else:
        raise ValueError(f"method {method!r}: unknown plan kind {kind!r}")
    from autoqra.memory import MemoryModel, ModelShape

    mm = MemoryModel.for_plan(ModelShape.from_path(model_dir), plan)
    mem = mm.plan_bytes(plan)
    meta = {**dict(plan.meta), "method": method, "kind": kind, "memory_bytes": mem,
            "budget_bytes": space.budget, "within_budget": mem <= space.budget * (1 + 1e-9),
            "in_search_space": space.contains(plan)}
    plan = plan.replace(meta=meta)
    plan.save(out)
    return plan


# -- random search -------------------------------------------------------------------------

def random_pool(space: SearchSpace, n: int, rng: np.random.Generator, ref_rank: int | None = None) -> list:
    """The random search's ``n`` plans: the uniform plans that fit (``uniform_genomes``, as in
    AutoQRA's warm start; the budget's own uniform plan first), then distinct uniform draws from
    the feasible plans for the rest. Without the uniform plans the pool would hold almost only plans
    with many 2-bit blocks (a median of 11 at b4), a rival that cannot compete."""
    from autoqra.search.operators import uniform_genomes

    pool = uniform_genomes(space, ref_rank)[:n]
    seen = {space.key(g) for g in pool}
    while len(pool) < n:
        for g in random_genomes(space, n - len(pool) + len(seen), rng):
            if space.key(g) not in seen and len(pool) < n:
                seen.add(space.key(g))
                pool.append(g)
    return pool


def random_propose(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                   budget: Mapping, seed: int, out: str | os.PathLike) -> list[list]:
    """``budget['proposals']`` distinct feasible plans of the random search (``random_pool``: the
    uniform plans that fit, then random ones; ``equal_cost_budget``), written as an HF phase file
    for the evaluate shards."""
    space = search_space(model_dir, space_cfg, budget_json)
    genomes = random_pool(space, int(budget["proposals"]), np.random.default_rng(seed + RANDOM_SEED_OFFSET),
                          reference_rank(budget_json, space))
    cands = [g.tolist() for g in genomes]
    atomic_write_json(out, {"generation": "random", "phase": "hf", "done": False, "candidates": cands,
                            "n_uniform": sum(len(set(g[0])) == 1 and len(set(g[1])) == 1 for g in cands),
                            "equal_cost": dict(budget)})
    return cands


def _random_observations(space: SearchSpace, phase_json, shards) -> tuple[dict, dict, list, list]:
    from autoqra.pipeline.search import read_shard_records, shard_scores

    doc, recs = read_json(phase_json), read_shard_records(shards)
    return doc, recs, [np.array(c) for c in doc["candidates"]], shard_scores(doc["candidates"], recs)


def random_select(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                  refine_cfg: Mapping, phase_json: str | os.PathLike, shards, seed: int,
                  out_pick: str | os.PathLike) -> dict:
    """The random search's pick candidates (top-k by utility and by score, filled), each to be
    re-evaluated at the fresh seeds: the same treatment as AutoQRA's final plan."""
    space = search_space(model_dir, space_cfg, budget_json)
    _, _, genomes, scores = _random_observations(space, phase_json, shards)
    _, doc = _pick_phase(space, genomes, scores, refine_cfg, seed)
    atomic_write_json(out_pick, doc)
    return doc


def random_pick(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                refine_cfg: Mapping, phase_json: str | os.PathLike, shards, pick_json: str | os.PathLike,
                pick_shards, seed: int, out_plan: str | os.PathLike, out_summary: str | os.PathLike) -> dict:
    """The random search's plan (best mean HF score over the fresh seeds) and its summary: every
    random plan, score, memory and utility (α·P̃ − (1−α)·M̃ on the random Pareto set), the pick and
    the HF evaluations spent."""
    from autoqra.pipeline.search import read_shard_records

    space = search_space(model_dir, space_cfg, budget_json)
    doc, recs, genomes, scores = _random_observations(space, phase_json, shards)
    tr, _ = _pick_phase(space, genomes, scores, refine_cfg, seed)
    pdoc, precs = read_json(pick_json), read_shard_records(pick_shards)
    pick = choose(space, pdoc, precs, tr.utility)
    plan = space.to_plan(np.array(pick["genome"]), meta={
        "score": pick["mean_score"], "score_std": pick["std_score"], "memory_bytes": pick["memory"],
        "utility": pick["mean_utility"], "origin": "random_search", "reevaluation_seeds": pdoc["reevaluation_seeds"]})
    plan.save(out_plan)
    genome, score, memory, utility = tr.best()
    n_pick = len(pick_records(pdoc, precs))
    summary = {"evaluations": len(genomes), "failed": sum(s is None for s in scores),
               "best_utility": {"plan_hash": space.to_plan(genome).hash, "hf_score": score, "memory_bytes": memory,
                                "utility": utility},
               "best_hf_score": max(s for s in scores if s is not None), "budget_bytes": space.budget,
               "final": {"plan_hash": plan.hash, "hf_score": pick["mean_score"], "hf_score_std": pick["std_score"],
                         "memory_bytes": pick["memory"], "memory_fraction": pick["memory_fraction"],
                         "within_one_upgrade": pick["within_one_upgrade"], "utility": pick["mean_utility"]},
               "pick": {"seeds": pdoc["reevaluation_seeds"], "chosen": pick["index"], "candidates": pick["candidates"]},
               "cost": {"hf_equivalents": len(genomes) + n_pick, "evaluations": len(genomes),
                        "pick_evaluations": n_pick, "equal_cost": doc.get("equal_cost")},
               "observations": [{"genome": g.tolist(), "plan_hash": recs[i]["plan_hash"], "score": s, "memory": m,
                                 "utility": None if s is None else tr.utility(s, m),
                                 "quant_error": recs[i].get("quant_error"), "pre_loss": recs[i].get("pre_loss")}
                                for i, (g, s, m) in enumerate((g, s, space.memory(g))
                                                              for g, s in zip(genomes, scores, strict=True))],
               "manifest": build_manifest("random_search", {"space": dict(space_cfg)}, seed)}
    atomic_write_json(out_summary, summary)
    return summary


# -- optuna baseline searcher and HF scores of every method -----------------------------------

def optuna_search(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike, evaluator: Any,
                  budget: Mapping, sampler: str, seed: int, out_summary: str | os.PathLike,
                  refine_cfg: Mapping | None = None) -> dict:
    """``budget['proposals']`` HF evaluations proposed one at a time by an optuna sampler, then the
    same noise-robust pick as AutoQRA's (re-evaluations at fresh seeds, counted in its cost) and
    one evaluation of the picked plan at the held-out seed (for the figures; cached evaluations,
    so a re-run replays the same trajectory without training again)."""
    from autoqra.search.optuna_sampler import OptunaSearch

    refine_cfg = dict(refine_cfg or {})
    space = search_space(model_dir, space_cfg, budget_json)
    opt = OptunaSearch(space, sampler, seed + RANDOM_SEED_OFFSET)
    trials = []
    for number in range(int(budget["proposals"])):
        proposed, genome = opt.ask()
        plan = space.to_plan(genome)
        rec = evaluator.evaluate(plan, "hf", seed)
        score = rec["score"] if rec["status"] == "ok" else None
        opt.tell(score)
        trials.append({"number": number, "plan_hash": plan.hash, "genome": genome.tolist(), "score": score,
                       "memory": space.memory(genome), "feasible": space.feasible(genome),
                       "repaired": bool((proposed != genome).any()), "status": rec["status"],
                       "reason": rec["reason"], "cached": rec["cached"],
                       "train_seconds": rec["train_seconds"], "eval_seconds": rec["eval_seconds"],
                       "build_seconds": rec["build_seconds"]})
    ok = [t for t in trials if t["score"] is not None and t["feasible"]]
    best = max(ok, key=lambda t: t["score"]) if ok else None
    tr, pdoc = _pick_phase(space, [np.array(t["genome"]) for t in trials], [t["score"] for t in trials],
                           refine_cfg, seed)
    precs = {}
    for i, (cand, s) in enumerate(zip(pdoc["candidates"], pdoc["seeds"], strict=True)):
        precs[i] = evaluator.evaluate(space.to_plan(np.array(cand)), "hf", int(s))
    pick = choose(space, pdoc, precs, tr.utility)
    held = heldout_seed(seed, len(pdoc["reevaluation_seeds"]), pick_offset(refine_cfg))
    held_rec = evaluator.evaluate(space.to_plan(np.array(pick["genome"])), "hf", held)
    summary = {"sampler": sampler, "evaluations": len(trials), "budget_bytes": space.budget, "trials": trials,
               "best": best,
               "final": {"plan_hash": space.to_plan(np.array(pick["genome"])).hash, "genome": pick["genome"],
                         "hf_score": pick["mean_score"], "hf_score_std": pick["std_score"],
                         "memory_bytes": pick["memory"], "memory_fraction": pick["memory_fraction"],
                         "heldout_seed": held, "heldout_hf_score": held_rec["score"] if held_rec["status"] == "ok"
                         else None},
               "pick": {"seeds": pdoc["reevaluation_seeds"], "chosen": pick["index"], "candidates": pick["candidates"]},
               "cost": {"hf_equivalents": len(trials) + len(pdoc["candidates"]), "evaluations": len(trials),
                        "pick_evaluations": len(pdoc["candidates"]), "equal_cost": dict(budget)},
               "pick_records": [{k: r.get(k) for k in ("plan_hash", "status", "score", "seed", "cached",
                                                       "train_seconds", "eval_seconds", "build_seconds")}
                                for r in precs.values()],
               "manifest": build_manifest("optuna_search", {"space": dict(space_cfg), "sampler": sampler}, seed)}
    atomic_write_json(out_summary, summary)
    return summary


def methods_hf(model_dir: str | os.PathLike, plan_files: Mapping[str, str], groups: Mapping[str, str],
               evaluator: Any, seed: int, out_tsv: str | os.PathLike) -> list[list]:
    """Every method's plan scored at HF (the search's own scale), for plotting baselines on the front;
    ``groups``: method -> table group (display labels are left to the figures). ``seed`` is the
    held-out seed (``autoqra.search.pick.heldout_seed``): no method's plan was selected on it, so a
    searched plan's score carries no winner's-curse bias; it is in the TSV."""
    from autoqra.io import atomic_write_tsv

    rows = []
    for method in sorted(plan_files):
        plan = Plan.load(plan_files[method])
        rec = evaluator.evaluate(plan, "hf", seed)
        rows.append([method, groups.get(method, "baseline"), plan.hash, rec["memory_bytes"], rec["score"],
                     rec["status"], seed])
    atomic_write_tsv(out_tsv, ("method", "group", "plan_hash", "memory_bytes", "hf_score", "status", "seed"), rows)
    return rows
