"""Stage 2 as file steps (static DAG): refine_propose(t) → refine_evaluate(t, shard) →
refine_update(t) → … → final_plan. Candidates are evaluated for real at HF by the same cached
evaluator as Stage 1 (a plan Stage 1 already trained is never re-trained). A variant with Stage 2
switched off takes its final plan from the Stage-1 observations by the same utility.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from autoqra.io import atomic_write_json, read_json
from autoqra.manifest import build_manifest
from autoqra.pipeline.common import load_priors, search_space, trust_region_settings
from autoqra.search.trust_region import TrustRegionSearch, TrustRegionSettings


class RefineContext:
    def __init__(self, model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                 priors_tsv: str | os.PathLike | None, refine_cfg: Mapping, seed: int):
        self.space = search_space(model_dir, space_cfg, budget_json)
        self.imp_q, self.imp_r = load_priors(priors_tsv, self.space.n_blocks)
        self.settings = trust_region_settings(refine_cfg)
        self.seed = int(seed)

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


def final_plan(ctx: RefineContext, front_json: str | os.PathLike, last_update: str | os.PathLike | None,
               out_plan: str | os.PathLike, out_history: str | os.PathLike,
               manifest_config: Mapping | None = None, out_stage1_plan: str | os.PathLike | None = None) -> dict:
    """The best feasible plan by utility (after Stage 2 if it ran) with its full history; also the
    best Stage-1 plan by the same utility (``out_stage1_plan``: the "no Stage 2" ablation)."""
    if last_update is None:  # Stage 2 switched off (ablation): pick among the Stage-1 observations
        tr, stop_reason = ctx.from_stage1(front_json, iterations=0), "stage2_disabled"
    else:
        doc = read_json(last_update)
        tr, stop_reason = ctx.restore(last_update), doc["stop_reason"]
    genome, score, memory, utility = tr.best()
    stage1 = [i for i, o in enumerate(tr.origin) if o == -1 and tr.scores[i] is not None
              and tr.space.feasible(tr.genomes[i])]
    best1 = max(stage1, key=lambda i: tr.utility(tr.scores[i], tr.memories[i]))
    stage1_best_score = max(tr.scores[i] for i in stage1)
    plan = ctx.space.to_plan(genome, meta={"score": score, "memory_bytes": memory, "utility": utility,
                                           "origin": "stage2" if tr.origin[_index(tr, genome)] >= 0 else "stage1"})
    plan.save(out_plan)
    if out_stage1_plan is not None:
        ctx.space.to_plan(tr.genomes[best1], meta={"score": tr.scores[best1], "memory_bytes": tr.memories[best1],
                                                   "utility": tr.utility(tr.scores[best1], tr.memories[best1]),
                                                   "origin": "stage1"}).save(out_stage1_plan)
    history = {
        "final": {"plan_hash": plan.hash, "hf_score": score, "memory_bytes": memory, "utility": utility,
                  "budget_bytes": ctx.space.budget, "within_budget": ctx.space.feasible(genome)},
        "stage1_best_utility": {"hf_score": tr.scores[best1], "memory_bytes": tr.memories[best1],
                                "utility": tr.utility(tr.scores[best1], tr.memories[best1])},
        "stage1_best_hf_score": stage1_best_score,
        "stop_reason": stop_reason, "iterations": tr.iteration, "norm": tr.norm,
        "trajectory": tr.history,
        "observations": [{"genome": g.tolist(), "score": s, "memory": m, "origin": o,
                          "utility": None if s is None else tr.utility(s, m)}
                         for g, s, m, o in zip(tr.genomes, tr.scores, tr.memories, tr.origin, strict=True)],
        "manifest": build_manifest("final_plan", manifest_config, ctx.seed),
    }
    atomic_write_json(out_history, history)
    return history


def _index(tr: TrustRegionSearch, genome: np.ndarray) -> int:
    key = tr.space.key(genome)
    return next(i for i, g in enumerate(tr.genomes) if tr.space.key(g) == key)
