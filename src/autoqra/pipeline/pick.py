"""The noise-robust pick as file steps, shared by every searcher: the search variants
(final_candidates → final_evaluate(shard) → final_plan), the random search (random_select →
random_reevaluate(shard) → random_pick) and the optuna searcher (in one job).

Candidates (``candidate_phase``): the top-k observed plans by the searcher's utility and by HF score
in turn, each filled to the budget (``autoqra.search.pick``); every candidate is evaluated once per
fresh seed, so the phase file lists (plan, seed) pairs that the ordinary evaluate shards run.
``choose`` then takes the best mean HF score, with its spread. ``refine.pick`` in the config and
``autoqra.search.pick`` say why the candidates are filled and why both rankings are used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from autoqra.search.cost import hf_equivalents
from autoqra.search.pick import PICK_SEED_OFFSET, pick_candidates, reevaluation_seeds, robust_pick
from autoqra.search.space import SearchSpace, saturated

FINAL, STAGE1 = "final", "stage1"


def pick_settings(refine_cfg: Mapping[str, Any], seed: int) -> tuple[int, list[int]]:
    """(k, the fresh seeds) from the ``refine`` config section and the search's seed; the seeds start
    after ``seed + refine.pick_seed_offset`` (default ``PICK_SEED_OFFSET``: disjoint from the final
    fine-tuning seeds)."""
    return int(refine_cfg.get("reevaluate_top_k", 3)), reevaluation_seeds(
        seed, int(refine_cfg.get("reevaluate_seeds", 2)), pick_offset(refine_cfg))


def pick_offset(refine_cfg: Mapping[str, Any]) -> int:
    """``refine.pick_seed_offset`` (default ``PICK_SEED_OFFSET``)."""
    return int(refine_cfg.get("pick_seed_offset", PICK_SEED_OFFSET))


def candidate_phase(space: SearchSpace, genomes: Sequence, scores: Sequence[float | None],
                    utilities: Sequence[float | None], k: int, seeds: Sequence[int], imp_q: np.ndarray,
                    imp_r: np.ndarray, stage1: Sequence[bool] | None = None) -> dict:
    """The phase file of a pick: candidate plans with the sets they belong to (``final``, and
    ``stage1`` for the Stage-1-only pick of the "w/o Stage 2" method when ``stage1`` marks which
    observations came from Stage 1; without it both sets are the same), and one (plan, seed)
    evaluation per fresh seed."""
    genomes = [np.asarray(g, dtype=np.int64) for g in genomes]
    sets: dict[bytes, list[str]] = {}
    order: list[np.ndarray] = []
    groups = [((FINAL,) if stage1 is not None else (FINAL, STAGE1), list(range(len(genomes))))]
    if stage1 is not None:
        groups.append(((STAGE1,), [i for i, s in enumerate(stage1) if s]))
    for names, idx in groups:
        for g in pick_candidates(space, [genomes[i] for i in idx], [[utilities[i] for i in idx],
                                                                    [scores[i] for i in idx]], k, imp_q, imp_r):
            if space.key(g) not in sets:
                order.append(g)
            sets.setdefault(space.key(g), []).extend(names)
    plans = [{"genome": g.tolist(), "sets": sets[space.key(g)], "memory": space.memory(g),
              "within_one_upgrade": saturated(space, g)} for g in order]
    return {"phase": "hf", "generation": "pick", "done": False, "reevaluation_seeds": list(seeds),
            "plans": plans, "candidates": [p["genome"] for p in plans for _ in seeds],
            "seeds": [s for _ in plans for s in seeds]}


def plan_scores(doc: Mapping, records: Mapping[int, Mapping]) -> list[list[float | None]]:
    """Re-evaluation scores per candidate plan (None = failed), in seed order."""
    n = len(doc["reevaluation_seeds"])
    out: list[list[float | None]] = [[] for _ in doc["plans"]]
    for i in range(len(doc["candidates"])):
        rec = records.get(i)
        if rec is None:
            raise RuntimeError(f"pick: re-evaluation record {i} is missing")
        out[i // n].append(rec["score"] if rec["status"] == "ok" else None)
    return out


def choose(space: SearchSpace, doc: Mapping, records: Mapping[int, Mapping],
           utility: Callable[[float, float], float], which: str = FINAL) -> dict:
    """The best plan of set ``which`` by mean re-evaluated HF score, and every candidate's numbers."""
    scores = plan_scores(doc, records)
    table = []
    for p, row in zip(doc["plans"], scores, strict=True):
        ok = [s for s in row if s is not None]
        table.append({**p, "scores": row, "utilities": [None if s is None else utility(s, p["memory"]) for s in row],
                      "mean_score": float(np.mean(ok)) if ok else None,
                      "std_score": float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0 if ok else None})
    members = [i for i, p in enumerate(doc["plans"]) if which in p["sets"]]
    best, means, _ = robust_pick([scores[i] for i in members])
    chosen = table[members[best]]
    ok_u = [u for u in chosen["utilities"] if u is not None]
    return {"index": members[best], "genome": chosen["genome"], "mean_score": means[best],
            "std_score": chosen["std_score"], "mean_utility": float(np.mean(ok_u)),
            "std_utility": float(np.std(ok_u, ddof=1)) if len(ok_u) > 1 else 0.0,
            "memory": chosen["memory"], "memory_fraction": chosen["memory"] / space.budget,
            "within_one_upgrade": chosen["within_one_upgrade"], "candidates": table}


def pick_records(doc: Mapping, records: Mapping[int, Mapping], which: str = FINAL) -> list[Mapping]:
    """The re-evaluation records of the plans in set ``which`` (the pick's cost for that set)."""
    n = len(doc["reevaluation_seeds"])
    return [records[i] for i in range(len(doc["candidates"])) if which in doc["plans"][i // n]["sets"]]


def stage_costs(stages: Mapping[str, Sequence[Mapping]], n_val: int | None) -> dict:
    """HF-equivalents per stage and in total, all in the unit of the first stage's HF evaluations."""
    first = next(iter(stages.values()))
    unit = hf_equivalents(first, n_val)["hf_unit"]
    out = {name: hf_equivalents(recs, n_val, unit) for name, recs in stages.items()}
    out["total"] = hf_equivalents([r for recs in stages.values() for r in recs], n_val, unit)
    return out


def cost_curve(records: Sequence[Mapping], n_val: int | None, hf_unit: float, budget: float,
               then: Sequence[Mapping] = (), start: float = 0.0) -> list[dict]:
    """Cumulative cost (HF-equivalents) after each evaluation of ``records`` (in search order) and
    the best feasible HF score seen so far (None before the first): Figure 3's x and y. ``then``
    (the pick's re-evaluations at fresh seeds) adds cost but no score: those seeds are not the
    search's, so their maximum would not compare with the rest of the curve. ``start``: cost spent
    before the first evaluation (Stage 0's HF-equivalents)."""
    out, cum, best = [], float(start), None
    for i, r in enumerate([*records, *then]):
        cum += hf_equivalents([r], n_val, hf_unit)["hf_equivalents"]
        s = r.get("score")
        if i < len(records) and r["fidelity"] == "hf" and r["status"] == "ok" and s is not None \
                and r["memory_bytes"] <= budget * (1 + 1e-9):
            best = s if best is None else max(best, s)
        out.append({"cost": cum, "best_score": best})
    return out
