"""Stage 2 as file steps (static DAG): refine_propose(t) → refine_evaluate(t, shard) →
refine_update(t) → … → final_candidates → final_evaluate(shard) → final_plan. Candidates are
evaluated for real at HF by the same cached evaluator as Stage 1 (a plan Stage 1 already trained is
never re-trained). The final plan is the noise-robust pick (``autoqra.pipeline.pick``) over every
observation; a variant with Stage 2 switched off picks from its Stage-1 observations the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from autoqra.io import atomic_write_json, read_json
from autoqra.manifest import build_manifest
from autoqra.pipeline.common import load_priors, search_space, trust_region_settings
from autoqra.pipeline.pick import (
    FINAL,
    STAGE1,
    candidate_phase,
    choose,
    cost_curve,
    pick_records,
    pick_settings,
    stage_costs,
)
from autoqra.search.cost import charge_stage0, stage0_units
from autoqra.search.trust_region import TrustRegionSearch, TrustRegionSettings


class RefineContext:
    def __init__(self, model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                 priors_tsv: str | os.PathLike | None, refine_cfg: Mapping, seed: int):
        self.space = search_space(model_dir, space_cfg, budget_json)
        self.imp_q, self.imp_r = load_priors(priors_tsv, self.space.n_blocks)
        self.settings = trust_region_settings(refine_cfg)
        self.seed = int(seed)
        self.k, self.pick_seeds = pick_settings(refine_cfg, self.seed)

    def from_stage1(self, front_json: str | os.PathLike, iterations: int | None = None) -> TrustRegionSearch:
        """A trust-region search seeded with every Stage-1 HF observation."""
        archive = read_json(front_json)["archive"]
        obs = [(np.array(r["genome"]), r["score"], r["memory"]) for r in archive if r["fidelity"] == "hf"]
        settings = self.settings
        if iterations is not None:
            settings = TrustRegionSettings(**{**vars(self.settings), "iterations": iterations})
        return TrustRegionSearch(self.space, self.imp_q, self.imp_r, settings, self.seed, obs)

    def restore(self, state_file: str | os.PathLike) -> TrustRegionSearch:
        return TrustRegionSearch.from_state(self.space, read_json(state_file)["state"])


def propose(ctx: RefineContext, front_json: str | os.PathLike, prev_update: str | os.PathLike | None,
            t: int, out: str | os.PathLike) -> list:
    """The q candidates of iteration ``t`` ([] once the search has stopped)."""
    tr = ctx.from_stage1(front_json) if t == 0 else ctx.restore(prev_update)
    stop, reason = tr.should_stop()
    cands = [] if stop else tr.ask()
    stop, reason = tr.should_stop()
    atomic_write_json(out, {"iteration": t, "phase": "hf", "generation": f"refine{t}",
                            "candidates": [g.tolist() for g in cands], "done": not cands,
                            "stop_reason": reason, "state": tr.state_dict()})
    return cands


def update(ctx: RefineContext, propose_json: str | os.PathLike, shards, out: str | os.PathLike) -> None:
    """Tell the HF scores; the trust region grows or shrinks by the TuRBO rule."""
    from autoqra.pipeline.search import read_shard_records, shard_scores

    doc = read_json(propose_json)
    tr = TrustRegionSearch.from_state(ctx.space, doc["state"])
    if doc["candidates"]:
        scores = shard_scores(doc["candidates"], read_shard_records(shards))
        tr.tell([np.array(g) for g in doc["candidates"]], scores)
    stop, reason = tr.should_stop()
    atomic_write_json(out, {"iteration": doc["iteration"], "done": stop or not doc["candidates"],
                            "stop_reason": reason or doc["stop_reason"], "state": tr.state_dict()})


def _final_search(ctx: RefineContext, front_json, last_update) -> tuple[TrustRegionSearch, str]:
    """Every observation of the variant (Stage 1, and Stage 2 when it ran) with Stage 2's utility."""
    if last_update is None:  # Stage 2 switched off (ablation): the Stage-1 observations alone
        return ctx.from_stage1(front_json, iterations=0), "stage2_disabled"
    return ctx.restore(last_update), read_json(last_update)["stop_reason"]


def candidates(ctx: RefineContext, front_json: str | os.PathLike, last_update: str | os.PathLike | None,
               out: str | os.PathLike) -> dict:
    """The pick's phase file: top-k by utility and by HF score (filled), each at the fresh seeds;
    with Stage 2 also the Stage-1-only candidates (the "w/o Stage 2" method's pick)."""
    tr, _ = _final_search(ctx, front_json, last_update)
    utils = [None if s is None else tr.utility(s, m) for s, m in zip(tr.scores, tr.memories, strict=True)]
    stage1 = None if last_update is None else [o < 0 for o in tr.origin]
    doc = candidate_phase(ctx.space, tr.genomes, tr.scores, utils, ctx.k, ctx.pick_seeds, ctx.imp_q, ctx.imp_r,
                          stage1)
    atomic_write_json(out, doc)
    return doc


def _ordered(files: Sequence[str | os.PathLike]) -> list[dict]:
    """Shard records in search order: generation (or Stage-2 iteration), LF before HF, candidate."""
    from autoqra.pipeline.search import read_shard_records

    recs = [r for f in files for r in read_shard_records([f]).values()]

    def key(r):
        gen = str(r["generation"])
        return (int(gen.removeprefix("refine")), r.get("phase") != "lf", int(r["index"]))
    return sorted(recs, key=key)


def _summary(space, pick: dict, plan) -> dict:
    return {"plan_hash": plan.hash, "hf_score": pick["mean_score"], "hf_score_std": pick["std_score"],
            "hf_scores": pick["candidates"][pick["index"]]["scores"], "memory_bytes": pick["memory"],
            "utility": pick["mean_utility"], "utility_std": pick["std_utility"], "budget_bytes": space.budget,
            "within_budget": space.feasible(np.array(pick["genome"])), "memory_fraction": pick["memory_fraction"],
            "within_one_upgrade": pick["within_one_upgrade"]}


def final_plan(ctx: RefineContext, front_json: str | os.PathLike, last_update: str | os.PathLike | None,
               pick_json: str | os.PathLike, pick_shards: Sequence, out_plan: str | os.PathLike,
               out_history: str | os.PathLike, manifest_config: Mapping | None = None,
               out_stage1_plan: str | os.PathLike | None = None, stage1_shards: Sequence = (),
               refine_shards: Sequence = (), n_val: int | None = None, stage0: Mapping | None = None) -> dict:
    """The noise-robust pick: of the candidates re-evaluated at fresh seeds, the best by mean HF
    score (``autoqra.pipeline.pick``), with its spread; also the Stage-1-only pick
    (``out_stage1_plan``: the "w/o Stage 2" ablation) and the variant's cost in HF-equivalents,
    Stage 0 included when ``stage0`` gives its settings (``{"settings": sensitivity config,
    "max_seq_len": data.max_seq_len}``; ``autoqra.search.cost.stage0_units``)."""
    from autoqra.pipeline.search import read_shard_records

    tr, stop_reason = _final_search(ctx, front_json, last_update)
    doc, recs = read_json(pick_json), read_shard_records(pick_shards)
    final, first = choose(ctx.space, doc, recs, tr.utility, FINAL), choose(ctx.space, doc, recs, tr.utility, STAGE1)
    observed = {ctx.space.key(g) for g in tr.genomes}

    def save(pick: dict, path, origin: str):
        g = np.array(pick["genome"])
        plan = ctx.space.to_plan(g, meta={"score": pick["mean_score"], "score_std": pick["std_score"],
                                          "memory_bytes": pick["memory"], "utility": pick["mean_utility"],
                                          "origin": origin, "filled": ctx.space.key(g) not in observed,
                                          "reevaluation_seeds": doc["reevaluation_seeds"]})
        plan.save(path)
        return plan

    plan = save(final, out_plan, "stage2" if last_update is not None else "stage1")
    plan1 = save(first, out_stage1_plan, "stage1") if out_stage1_plan is not None else plan
    stage1 = [i for i, o in enumerate(tr.origin) if o == -1 and tr.scores[i] is not None
              and tr.space.feasible(tr.genomes[i])]
    best1 = max(stage1, key=lambda i: tr.utility(tr.scores[i], tr.memories[i]))
    s1_recs, s2_recs, pick_recs = _ordered(stage1_shards), _ordered(refine_shards), pick_records(doc, recs, FINAL)
    cost = stage_costs({"stage1": s1_recs, "stage2": s2_recs, "pick": pick_recs}, n_val) if s1_recs else None
    if cost is not None and stage0 is not None:
        cost = charge_stage0(cost, stage0_units(stage0["settings"], ctx.space.n_blocks, int(stage0["max_seq_len"])))
    start = cost["stage0"]["hf_equivalents"] if cost and "stage0" in cost else 0.0
    history = {
        "final": _summary(ctx.space, final, plan),
        "stage1_pick": _summary(ctx.space, first, plan1),
        "stage1_best_utility": {"hf_score": tr.scores[best1], "memory_bytes": tr.memories[best1],
                                "utility": tr.utility(tr.scores[best1], tr.memories[best1])},
        "stage1_best_hf_score": max(tr.scores[i] for i in stage1),
        "pick": {"rankings": ["utility", "hf_score"], "top_k": ctx.k, "seeds": doc["reevaluation_seeds"],
                 "filled": True, "criterion": "mean_hf_score", "chosen": final["index"],
                 "stage1_chosen": first["index"], "candidates": final["candidates"]},
        "cost": cost,
        "cost_curve": cost_curve(s1_recs + s2_recs, n_val, cost["total"]["hf_unit"], ctx.space.budget,
                                 then=pick_recs, start=start) if cost else [],
        "stop_reason": stop_reason, "iterations": tr.iteration, "norm": tr.norm,
        "trajectory": tr.history,
        "observations": [{"genome": g.tolist(), "score": s, "memory": m, "origin": o,
                          "utility": None if s is None else tr.utility(s, m)}
                         for g, s, m, o in zip(tr.genomes, tr.scores, tr.memories, tr.origin, strict=True)],
        "manifest": build_manifest("final_plan", manifest_config, ctx.seed),
    }
    atomic_write_json(out_history, history)
    return history
