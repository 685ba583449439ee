"""The plan every fine-tuned method uses (rule method_plan) and the random-search baseline
(rules random_propose → search_evaluate-style shards → random_select).

A method is a config entry ``{plan: search|uniform|sequential|random, ...}``:
- ``search``: the final plan of a search variant (``variant``); ``stage2: false`` takes the
  Stage-1 pick of that variant instead (the "no Stage 2" ablation shares the variant's Stage 1);
- ``uniform``: ``bits``/``rank`` in every block (``quantizer`` defaults to the search space's
  quantizer for ``bits``, ``none`` at 16);
- ``sequential``: mixed bits from the raw ``I_q`` under the budget, then uniform ``rank``;
- ``random``: the best plan of the random search (same HF evaluation count as AutoQRA);
- ``base``: the 16-bit base model, not fine-tuned (rule finetune saves the adapter untrained), the
  reference that fine-tuning must beat.

Also the optuna baseline searcher (rule optuna_search, for the search-efficiency figure) and the
HF scores of every method's plan (rule methods_hf, for the Pareto figure).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoqra.baselines import random_genomes, sequential_genome, uniform_plan
from autoqra.io import atomic_write_json, read_json
from autoqra.manifest import build_manifest
from autoqra.pipeline.common import load_priors, load_raw_iq, search_space, trust_region_settings
from autoqra.plan import Plan
from autoqra.search.trust_region import TrustRegionSearch

RANDOM_SEED_OFFSET = 7919  # the random search draws from its own stream, not the evolutionary search's


def hf_evaluation_count(config: Mapping[str, Any], variant: str = "autoqra") -> int:
    """HF evaluations a search variant spends: the initial population, ``promote`` per later
    generation (all offspring without multi-fidelity) and ``q`` per Stage-2 iteration."""
    s, v = config["search"], config["search"]["variants"].get(variant, {})
    per_gen = (s["offspring"] or s["population"]) if v.get("multi_fidelity", True) is False else s["promote"]
    n = s["population"] + s["generations"] * per_gen
    if v.get("stage2", True):
        n += config["refine"]["q"] * config["refine"]["iterations"]
    return n


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
        plan = uniform_plan(space.n_blocks, spec["bits"], spec["rank"], quantizer, space.group_size, space.hqq_axis)
    elif kind == "sequential":
        if priors_tsv is None:
            raise ValueError(f"method {method!r}: plan kind 'sequential' needs the Stage-0 priors")
        plan = space.to_plan(sequential_genome(space, load_raw_iq(priors_tsv, space.n_blocks), spec["rank"]))
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

def random_propose(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike, n: int,
                   seed: int, out: str | os.PathLike) -> list[list]:
    """``n`` distinct feasible random plans, written as an HF phase file for the evaluate shards."""
    space = search_space(model_dir, space_cfg, budget_json)
    genomes = random_genomes(space, n, np.random.default_rng(seed + RANDOM_SEED_OFFSET))
    cands = [g.tolist() for g in genomes]
    atomic_write_json(out, {"generation": "random", "phase": "hf", "done": False, "candidates": cands})
    return cands


def random_select(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                  priors_tsv: str | os.PathLike | None, refine_cfg: Mapping, phase_json: str | os.PathLike,
                  shards, seed: int, out_plan: str | os.PathLike, out_summary: str | os.PathLike) -> dict:
    """The best random plan by AutoQRA's utility (α·P̃ − (1−α)·M̃ normalised on the random Pareto set)."""
    from autoqra.pipeline.search import read_shard_records, shard_scores

    space = search_space(model_dir, space_cfg, budget_json)
    imp_q, imp_r = load_priors(priors_tsv, space.n_blocks)
    doc = read_json(phase_json)
    recs = read_shard_records(shards)
    scores = shard_scores(doc["candidates"], recs)
    genomes = [np.array(c) for c in doc["candidates"]]
    obs = [(g, s, space.memory(g)) for g, s in zip(genomes, scores, strict=True)]
    settings = trust_region_settings(refine_cfg, iterations=0)
    tr = TrustRegionSearch(space, imp_q, imp_r, settings, seed, obs)
    genome, score, memory, utility = tr.best()
    best_score = max(s for s in scores if s is not None)
    plan = space.to_plan(genome, meta={"score": score, "memory_bytes": memory, "utility": utility,
                                       "origin": "random_search"})
    plan.save(out_plan)
    summary = {"evaluations": len(genomes), "failed": sum(s is None for s in scores),
               "best_utility": {"plan_hash": plan.hash, "hf_score": score, "memory_bytes": memory,
                                "utility": utility},
               "best_hf_score": best_score, "budget_bytes": space.budget,
               "observations": [{"genome": g.tolist(), "plan_hash": recs[i]["plan_hash"], "score": s, "memory": m,
                                 "utility": None if s is None else tr.utility(s, m),
                                 "quant_error": recs[i].get("quant_error"), "pre_loss": recs[i].get("pre_loss")}
                                for i, (g, s, m) in enumerate(obs)],
               "manifest": build_manifest("random_search", {"space": dict(space_cfg)}, seed)}
    atomic_write_json(out_summary, summary)
    return summary


# -- optuna baseline searcher and HF scores of every method -----------------------------------

def optuna_search(model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike, evaluator: Any,
                  n: int, sampler: str, seed: int, out_summary: str | os.PathLike) -> dict:
    """``n`` HF evaluations proposed one at a time by an optuna sampler (cached evaluations, so a
    re-run replays the same trajectory without training again)."""
    from autoqra.search.optuna_sampler import OptunaSearch

    space = search_space(model_dir, space_cfg, budget_json)
    opt = OptunaSearch(space, sampler, seed + RANDOM_SEED_OFFSET)
    trials = []
    for number in range(n):
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
    summary = {"sampler": sampler, "evaluations": n, "budget_bytes": space.budget, "trials": trials,
               "best": best, "manifest": build_manifest("optuna_search", {"space": dict(space_cfg),
                                                                          "sampler": sampler}, seed)}
    atomic_write_json(out_summary, summary)
    return summary


def methods_hf(model_dir: str | os.PathLike, plan_files: Mapping[str, str], groups: Mapping[str, str],
               evaluator: Any, seed: int, out_tsv: str | os.PathLike) -> list[list]:
    """Every method's plan scored at HF (the search's own scale), for plotting baselines on the front;
    ``groups``: method -> table group (display labels are left to the figures)."""
    from autoqra.io import atomic_write_tsv

    rows = []
    for method in sorted(plan_files):
        plan = Plan.load(plan_files[method])
        rec = evaluator.evaluate(plan, "hf", seed)
        rows.append([method, groups.get(method, "baseline"), plan.hash, rec["memory_bytes"], rec["score"],
                     rec["status"]])
    atomic_write_tsv(out_tsv, ("method", "group", "plan_hash", "memory_bytes", "hf_score", "status"), rows)
    return rows
