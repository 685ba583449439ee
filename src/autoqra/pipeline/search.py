"""Stage 1 as file steps, one per Snakemake job (static DAG, one chain per search variant):

    search_propose(g) → search_evaluate(g, lf, shard) → search_promote(g)
                      → search_evaluate(g, hf, shard) → search_select(g) → search_propose(g+1) … → search_front

Each step rebuilds ``EvolutionarySearch`` from the previous step's JSON state (RNG included), so a
killed run resumes on the same trajectory; evaluations go through the cached Evaluator, so a
re-run or early-stopped generation costs nothing. Generation 0 evaluates the initial population
at LF and HF (the performance model's first pairs). After an early stop the remaining generations
pass the state through with no candidates.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from autoqra.io import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_tsv,
    read_json,
    read_jsonl,
)
from autoqra.manifest import build_manifest
from autoqra.pipeline.common import (
    evolution_settings,
    load_priors,
    reference_rank,
    search_space,
    shard_of,
)
from autoqra.search.cost import hf_equivalents
from autoqra.search.evolution import EvolutionarySearch
from autoqra.search.operators import uniform_genomes
from autoqra.search.pareto import shared_hv_reference
from autoqra.search.space import SearchSpace

RECORD_COLUMNS = ("generation", "phase", "fidelity", "plan_hash", "bits", "ranks", "status", "reason", "score",
                  "loss", "accuracy", "memory_bytes", "train_seconds", "eval_seconds", "steps", "cached")


class SearchContext:
    """What every step needs: the space, priors and settings of one search variant. The budget's
    rank (the warm start's uniform plans) and the shared hypervolume reference (rule
    search_reference) are settled here, so every variant starts from the same two numbers."""

    def __init__(self, model_dir: str | os.PathLike, space_cfg: Mapping, budget_json: str | os.PathLike,
                 priors_tsv: str | os.PathLike | None, search_cfg: Mapping, variant: Mapping, seed: int,
                 hv_reference_json: str | os.PathLike | None = None):
        self.space = search_space(model_dir, space_cfg, budget_json)
        self.imp_q, self.imp_r = load_priors(priors_tsv, self.space.n_blocks)
        settings = evolution_settings(search_cfg, variant)
        extra = {"reference_rank": reference_rank(budget_json, self.space)}
        if hv_reference_json and read_json(hv_reference_json)["score"] is not None:
            extra["hv_ref_score"] = float(read_json(hv_reference_json)["score"])
        self.settings = replace(settings, **extra)
        self.seed = int(seed)

    def new(self) -> EvolutionarySearch:
        return EvolutionarySearch(self.space, self.imp_q, self.imp_r, self.settings, self.seed)

    def restore(self, state_file: str | os.PathLike) -> tuple[EvolutionarySearch, dict]:
        doc = read_json(state_file)
        return EvolutionarySearch.from_state(self.space, self.imp_q, self.imp_r, doc["state"]), doc


def phase_size(settings: Any, generation: int, phase: str) -> int:
    """The most candidates phase ``phase`` of ``generation`` can hold (fewer after an early stop or
    when the feasible space runs out): what sizes its evaluation jobs. Generation 0 evaluates the
    whole initial population at both fidelities; later generations their offspring at LF and the
    ``promote`` best of them at HF; a single-fidelity search has no LF phase."""
    if phase not in ("lf", "hf"):
        raise ValueError(f"phase {phase!r}: expected 'lf' or 'hf'")
    if phase == "lf" and not settings.multi_fidelity:
        return 0
    if generation == 0:
        return settings.population
    if phase == "hf" and settings.multi_fidelity:
        return min(settings.promote, settings.n_offspring)
    return settings.n_offspring


def reference(space: SearchSpace, evaluator: Any, seed: int, ref_rank: int | None, out: str | os.PathLike,
              margin: float = 0.1, fixed_score: float | None = None) -> dict:
    """The hypervolume reference every search variant of the model shares, fixed before any search:
    ``shared_hv_reference`` of the HF scores (search seed) of the smallest plan and the budget's own
    uniform plan, or ``fixed_score`` (config search.hv_ref_score) without evaluating anything.

    A failed evaluation is replaced by the next uniform plan that fits; if every one fails, the
    score is null and each variant falls back to its own reference (frozen at its generation 0),
    with the failures recorded here, so that a broken evaluator fails in the search, which says why.
    """
    plans = [space.uniform(space.bits[0], space.ranks[0]), *uniform_genomes(space, ref_rank)]
    rows: list[dict] = []
    if fixed_score is None:
        for g in plans:
            if sum(r["status"] == "ok" for r in rows) >= 2:
                break
            if any(r["genome"] == g.tolist() for r in rows):
                continue
            rec = evaluator.evaluate(space.to_plan(g), "hf", seed)
            rows.append({"genome": g.tolist(), "plan_hash": rec["plan_hash"], "status": rec["status"],
                         "reason": rec.get("reason"), "score": rec["score"], "memory_bytes": space.memory(g),
                         "cached": rec["cached"]})
    ok = [r["score"] for r in rows if r["status"] == "ok" and r["score"] is not None]
    if fixed_score is not None:
        score, source = float(fixed_score), "config search.hv_ref_score"
    elif ok:
        score, source = shared_hv_reference(ok, margin), "smallest plan and the budget's uniform plan at HF"
    else:
        score, source = None, "none: every reference plan's evaluation failed (each variant freezes its own)"
    doc = {"score": score, "margin": margin, "seed": seed, "plans": rows, "source": source}
    atomic_write_json(out, doc)
    return doc


def _write_phase(path, search: EvolutionarySearch, generation: int, phase: str, candidates: Sequence,
                 done: bool, **extra) -> None:
    atomic_write_json(path, {"generation": generation, "phase": phase, "done": done,
                             "candidates": [np.asarray(g).tolist() for g in candidates],
                             "state": search.state_dict(), **extra})


def propose(ctx: SearchContext, prev_select: str | os.PathLike | None, generation: int, out: str | os.PathLike) -> None:
    """Offspring of ``generation`` (the initial population for 0) to evaluate at LF."""
    if generation == 0:
        search = ctx.new()
        kids, done = search.initial_population(), False
    else:
        search, doc = ctx.restore(prev_select)
        done = doc["done"]
        kids = [] if done else search.propose(generation)
    lf = kids if search.settings.multi_fidelity else []
    _write_phase(out, search, generation, "lf", lf, done, offspring=[g.tolist() for g in kids])


def read_shard_records(files: Sequence[str | os.PathLike]) -> dict[int, dict]:
    """Shard outputs merged: candidate index -> evaluation record."""
    out: dict[int, dict] = {}
    for f in files:
        for rec in read_jsonl(f):
            out[int(rec["index"])] = rec
    return out


def shard_scores(candidates: list, records: dict[int, dict]) -> list[float | None]:
    missing = [i for i in range(len(candidates)) if i not in records]
    if missing:
        raise RuntimeError(f"evaluation records missing for candidates {missing}")
    return [records[i]["score"] if records[i]["status"] == "ok" else None for i in range(len(candidates))]


def promote(ctx: SearchContext, lf_phase: str | os.PathLike, lf_shards: Sequence, out: str | os.PathLike) -> None:
    """Tell the LF scores and choose which offspring get an HF evaluation."""
    search, doc = ctx.restore(lf_phase)
    g, offspring = doc["generation"], [np.array(x) for x in doc["offspring"]]
    if doc["done"]:
        _write_phase(out, search, g, "hf", [], True, offspring=doc["offspring"])
        return
    if not search.settings.multi_fidelity:
        chosen = offspring
    else:
        lf_records = read_shard_records(lf_shards)
        lf = shard_scores(doc["candidates"], lf_records)
        _check_not_all_failed(lf, lf_records, g, "lf")
        search.tell(offspring, "lf", lf)
        chosen = offspring if g == 0 else [offspring[i] for i in search.promote(offspring, lf)]
    _write_phase(out, search, g, "hf", chosen, False, offspring=doc["offspring"])


def select(ctx: SearchContext, hf_phase: str | os.PathLike, hf_shards: Sequence, out: str | os.PathLike) -> None:
    """Tell the HF scores and run environmental selection."""
    search, doc = ctx.restore(hf_phase)
    g = doc["generation"]
    if not doc["done"]:
        hf_records = read_shard_records(hf_shards)
        hf = shard_scores(doc["candidates"], hf_records)
        _check_not_all_failed(hf, hf_records, g, "hf")
        search.tell([np.array(x) for x in doc["candidates"]], "hf", hf)
        search.select()
    atomic_write_json(out, {"generation": g, "done": doc["done"] or search.done(), "state": search.state_dict(),
                            "hypervolume": search.history[-1] if search.history else 0.0,
                            "population": [x.tolist() for x in search.population]})


def _check_not_all_failed(scores: list, records: dict[int, dict], generation: int, phase: str) -> None:
    """A generation in which every candidate failed cannot be selected from: stop, saying why."""
    if scores and all(s is None for s in scores):
        reasons = Counter(str(r.get("reason")).split(":")[0] for r in records.values())
        raise RuntimeError(f"generation {generation}: every {phase.upper()} evaluation failed ({len(scores)} "
                           f"candidates; reasons: {', '.join(f'{k} x{n}' for k, n in reasons.most_common())}, "
                           f"e.g. {next(iter(records.values())).get('reason')!r}). The search cannot go on; "
                           "see the shard records for each plan")


def evaluate(space: SearchSpace, phase_file: str | os.PathLike, shard: int, shards: int, evaluator: Any,
             seed: int, out: str | os.PathLike, quant_error: bool = False) -> list[dict]:
    """Evaluate this shard's candidates at the phase's fidelity (cached); one JSONL record each.
    Used by Stage 1, Stage 2, the picks and the random search (any phase file with ``candidates``,
    and ``seeds`` where each candidate has its own seed, else ``seed``);
    ``quant_error`` adds each plan's loss increase from quantization alone (before fine-tuning)."""
    doc = read_json(phase_file)
    cands, seeds = doc["candidates"], doc.get("seeds")  # per-candidate seeds: the pick's re-evaluations
    recs = []
    for i in shard_of(cands, shard, shards):
        plan = space.to_plan(np.array(cands[i]))
        rec = evaluator.evaluate(plan, doc["phase"], seed if seeds is None else int(seeds[i]))
        if quant_error:
            rec = {**rec, **evaluator.quant_error(plan)}
        recs.append({**rec, "index": i, "genome": cands[i], "generation": doc["generation"], "phase": doc["phase"]})
    atomic_write_jsonl(out, recs)
    return recs


def front(ctx: SearchContext, last_select: str | os.PathLike, shard_files: Sequence, out_dir: str | os.PathLike,
          manifest_config: Mapping | None = None, n_val: int | None = None) -> dict:
    """Write the Pareto front, every evaluation record, the hypervolume history, the search's cost
    (HF-equivalents, ``autoqra.search.cost``; ``n_val`` validation examples) and a manifest."""
    out = Path(out_dir)
    search, doc = ctx.restore(last_select)
    front_rows = []
    for genome, score, mem in search.front():
        plan = ctx.space.to_plan(genome)
        front_rows.append({"plan": plan.to_dict(), "plan_hash": plan.hash, "hf_score": score, "memory_bytes": mem,
                           "genome": genome.tolist()})
    rows = []
    for f in shard_files:
        for r in read_jsonl(f):
            rows.append([r["generation"], r["phase"], r["fidelity"], r["plan_hash"],
                         ",".join(map(str, r["plan"]["bits"])), ",".join(map(str, r["plan"]["ranks"])),
                         r["status"], r["reason"] or "", r["score"], r["loss"], r["accuracy"], r["memory_bytes"],
                         r["train_seconds"], r["eval_seconds"], r["steps"], r.get("cached", False)])
    rows.sort(key=lambda r: (r[0], r[1] != "lf", r[3]))
    atomic_write_tsv(out / "records.tsv", RECORD_COLUMNS, rows)
    atomic_write_tsv(out / "hypervolume.tsv", ("generation", "hypervolume"), list(enumerate(search.history)))
    n_lf = sum(1 for r in rows if r[2] == "lf")
    n_hf = sum(1 for r in rows if r[2] == "hf")
    summary = {"front": front_rows, "budget_bytes": ctx.space.budget, "generations_run": search.generation,
               "stopped_early": search.generation < ctx.settings.generations, "evaluations": {"lf": n_lf, "hf": n_hf},
               "fresh_evaluations": sum(1 for r in rows if not r[-1]),
               "cost": {**hf_equivalents([r for f in shard_files for r in read_jsonl(f)], n_val), "n_val": n_val},
               "hv_reference": search.hv_ref,
               "archive": search.state_dict()["archive"], "settings": vars(ctx.settings)}
    atomic_write_json(out / "front.json", summary)
    atomic_write_json(out / "manifest.json", build_manifest("search_front", manifest_config, ctx.seed,
                                                            extra={"evaluations": summary["evaluations"]}))
    return summary
