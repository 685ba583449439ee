"""The real Stage 1 + Stage 2 code on a synthetic objective at the paper's settings (no model).

Runs ``EvolutionarySearch`` (population 40, 12 generations, 6 promotions per generation), then
``TrustRegionSearch`` (q = 4 × 10 iterations), then the noise-robust pick (top 3, 2 fresh seeds),
exactly as the pipeline chains them, on the cost tables of Qwen3-4B and Llama-3-8B (their public
config.json shapes, HQQ group 128, budget = uniform 4-bit at rank 8). Compared at equal cost
(HF-equivalents, ``autoqra.search.cost``, LF counted at the paper's fidelities):

- ``autoqra``: the full method;
- ``no_warm_start``: the same with a random initial population;
- ``random``: feasible plans drawn uniformly, as many as AutoQRA's cost allows after its own
  noise-robust pick (the same pick, with flat priors).

The objective (per block ℓ, quality in "nats"): P = −1 − mean_ℓ[w_ℓ·4^−(q_ℓ−2)·(1 − 0.3·h(r_ℓ))]
+ 0.1·mean_ℓ[v_ℓ·h(r_ℓ)], h(r) = log2(r/4)/2: quantization damage falls ×4 per bit, the adapter
gains with log-rank and also repairs part of the quantization damage (low-bit blocks profit more
from rank). HF observation = P + N(0, 0.004²); LF = a short-training version (the adapter barely
helps, damage −10 % instead of −30 %) + N(0, 0.008²); both deterministic per (plan, seed) like the
pipeline's cached evaluator. The priors are the sensitivities seen through log-normal noise
(σ = 0.3): raw I_q = w·e^ε, raw I_r = v·e^ε'. Three sensitivity profiles over depth:
``bulk_outliers`` (flat bulk, three blocks 10-30× more sensitive to bits, two 3-6× to rank),
``uniform`` (independent U(0.2, 3)), ``smooth`` (U-shaped over depth for bits, a bump for rank).

Reported per (model, profile, seed): each method's true (noise-free) P of the picked plan, its
memory / budget and whether it is within one upgrade of the budget (no single upgrade still fits);
targets: every final plan within one upgrade of the budget, AutoQRA ≥ each other method in ≥ 4 of 5
seeds on every profile. Also the knapsack optimum of the true objective (exact DP), uniform 4-bit,
and AutoQRA's pick made by other rules from the same runs (utility only, score only, utility
without the fill = the earlier rule plus re-evaluation). ``--norms`` also runs AutoQRA with each prior normalisation of
``autoqra.search.priors``; the pick is also made without the fill (``pick_no_fill``) from the same runs.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/search_sim.py
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/search_sim.py --seeds 3 \
        --norms minmax rank --no-baselines --out benchmarks/results/search_sim_norms.json

(one BLAS thread: the GP and MLP fits are small, and threads only contend on a shared CPU; about
35 s per (model, profile, seed) on an idle core, Stage 2's GP fits most of it.)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np

from autoqra.baselines import random_genomes
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.search.cost import equal_cost_evaluations, evaluation_units
from autoqra.search.evolution import EvolutionarySearch, EvolutionSettings
from autoqra.search.operators import uniform_genomes
from autoqra.search.pareto import shared_hv_reference
from autoqra.search.pick import pick_candidates, reevaluation_seeds, robust_pick
from autoqra.search.priors import NORMS, normalise_priors
from autoqra.search.space import SearchSpace, saturated
from autoqra.search.trust_region import TrustRegionSearch, TrustRegionSettings

# Public config.json values.
MODELS = {
    "qwen3-4b": {"model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 2560, "intermediate_size": 9728,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                 "tie_word_embeddings": True},
    "llama3-8b": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                  "tie_word_embeddings": False},
}
PROFILES = ("bulk_outliers", "uniform", "smooth")
# config/paper.yaml
PAPER = {"population": 40, "generations": 12, "promote": 6, "q": 4, "iterations": 10, "top_k": 3, "reeval_seeds": 2}
# Forward-pass units of one evaluation at the paper's fidelities (Alpaca-cleaned, ~49.8k training
# examples, effective batch 16, 500 validation examples): LF 16 steps, HF 311 steps.
LF_UNITS, HF_UNITS = evaluation_units(16, 16, 500), evaluation_units(311, 16, 500)
HF_SIGMA, LF_SIGMA, PRIOR_SIGMA = 0.004, 0.008, 0.3


def make_space(name: str) -> SearchSpace:
    mm = MemoryModel(ModelShape.from_config(MODELS[name]), "hqq", 128)
    n = mm.shape.n_blocks
    return SearchSpace.from_memory_model(mm, (2, 3, 4, 8), (4, 8, 16), mm.plan_bytes(Plan.uniform(n, 4, 8)))


def profile(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(w, v): per-block sensitivity of the quality to bits and to rank."""
    x = np.linspace(0.0, 1.0, n)
    if kind == "bulk_outliers":
        w, v = np.exp(rng.normal(0, 0.1, n)), np.exp(rng.normal(0, 0.1, n))
        w[[0, 1, n - 1]] *= rng.uniform(10, 30, 3)
        v[rng.choice(n, 2, replace=False)] *= rng.uniform(3, 6, 2)
    elif kind == "uniform":
        w, v = rng.uniform(0.2, 3.0, n), rng.uniform(0.2, 3.0, n)
    elif kind == "smooth":
        w = (0.4 + 2.6 * (2 * x - 1) ** 2) * np.exp(rng.normal(0, 0.05, n))
        v = (0.5 + 1.5 * np.sin(np.pi * x)) * np.exp(rng.normal(0, 0.05, n))
    else:
        raise ValueError(f"profile {kind!r}: expected one of {PROFILES}")
    return w, v


class Objective:
    """True quality, noisy LF/HF observations (deterministic per plan, fidelity, seed) and priors."""

    def __init__(self, space: SearchSpace, kind: str, instance: int):
        rng = np.random.default_rng([instance, PROFILES.index(kind)])
        n = space.n_blocks
        self.w, self.v = profile(kind, n, rng)
        self.iq_raw = self.w * np.exp(rng.normal(0, PRIOR_SIGMA, n))
        self.ir_raw = self.v * np.exp(rng.normal(0, PRIOR_SIGMA, n))
        d = 4.0 ** -(np.array(space.bits, float) - 2)
        h = np.log2(np.array(space.ranks, float) / 4) / 2
        w, v = self.w[:, None, None], self.v[:, None, None]
        self.hf_table = -(w * d[None, :, None] * (1 - 0.3 * h[None, None, :]) - 0.1 * v * h[None, None, :]) / n
        self.lf_table = -(w * d[None, :, None] * (1 - 0.1 * h[None, None, :]) - 0.02 * v * h[None, None, :]) / n
        self.space, self.instance = space, instance
        self.calls = {"lf": 0, "hf": 0}

    def true(self, g) -> float:
        g = np.asarray(g)
        return -1.0 + float(self.hf_table[np.arange(self.space.n_blocks), g[0], g[1]].sum())

    def observe(self, g, fidelity: str, seed: int) -> float:
        g = np.asarray(g, dtype=np.int64)
        assert self.space.feasible(g), "a search handed out a plan over the budget"
        self.calls[fidelity] += 1
        h = int.from_bytes(hashlib.blake2b(g.astype(np.int8).tobytes(), digest_size=8).digest(), "little")
        eps = np.random.default_rng([self.instance, seed, fidelity == "hf", h]).normal()
        table, sigma = (self.hf_table, HF_SIGMA) if fidelity == "hf" else (self.lf_table, LF_SIGMA)
        return -1.0 + float(table[np.arange(self.space.n_blocks), g[0], g[1]].sum()) + sigma * eps

    def evaluator(self, seed: int):
        return lambda genomes, fid: [self.observe(g, fid, seed) for g in genomes]


def optimum(space: SearchSpace, obj: Objective, grid: float = 2.0**18) -> float:
    """Best true P under the budget: the separable objective is a multiple-choice knapsack (exact DP
    on a 256 KiB grid, costs rounded up, so the plan it stands for is feasible)."""
    cells = int(space.budget // grid)
    best = np.zeros(cells + 1)
    for ell in range(space.n_blocks):
        nxt = np.full(cells + 1, -np.inf)
        for c, val in zip(np.ceil(space.cost[ell].ravel() / grid).astype(int), obj.hf_table[ell].ravel(), strict=True):
            nxt[c:] = np.maximum(nxt[c:], best[:cells + 1 - c] + val)
        best = nxt
    return -1.0 + float(best.max())


def hf_equivalents(lf: int, hf: int) -> float:
    return (lf * LF_UNITS + hf * HF_UNITS) / HF_UNITS


def pick(space, tr: TrustRegionSearch, obj: Objective, imp_q, imp_r, seed: int, fill: bool = True,
         criterion: str = "union") -> dict:
    """The noise-robust pick over ``tr``'s observations. Candidates: the top-k by Stage 2's utility
    and by HF score in turn (``union``, the pipeline's rule), or by one of them alone; filled or not;
    re-evaluated at fresh seeds; the best by mean HF score (by mean utility for ``utility``)."""
    utils = [None if s is None else tr.utility(s, m) for s, m in zip(tr.scores, tr.memories, strict=True)]
    rankings = {"union": [utils, tr.scores], "utility": [utils], "score": [tr.scores]}[criterion]
    cands = pick_candidates(space, tr.genomes, rankings, PAPER["top_k"], imp_q, imp_r, fill=fill)
    seeds = reevaluation_seeds(seed, PAPER["reeval_seeds"])
    vals = [[obj.observe(c, "hf", s) for s in seeds] for c in cands]
    if criterion == "utility":
        vals = [[tr.utility(v, space.memory(c)) for v in row] for c, row in zip(cands, vals, strict=True)]
    i, means, stds = robust_pick(vals)
    g = cands[i]
    return {"true": obj.true(g), "memory_fraction": space.memory(g) / space.budget,
            "within_one_upgrade": saturated(space, g), "n_reeval": len(cands) * len(seeds),
            "mean": means[i], "std": stds[i]}


def run_search(space, obj: Objective, norm: str, warm: bool, seed: int, hv_ref: float, stage2: bool = True) -> dict:
    """Stage 1 + Stage 2 + the pick (with and without fill) as the pipeline chains them."""
    imp_q, imp_r = normalise_priors(obj.iq_raw, norm), normalise_priors(obj.ir_raw, norm)
    settings = EvolutionSettings(population=PAPER["population"], generations=PAPER["generations"],
                                 promote=PAPER["promote"], warm_start=warm, hv_ref_score=hv_ref, reference_rank=8)
    es = EvolutionarySearch(space, imp_q, imp_r, settings, seed)
    t0 = time.perf_counter()
    init = es.initial_population() if warm else None
    seeded = {"memory_fraction_min": min(space.memory(g) for g in init) / space.budget,
              "within_one_upgrade": sum(saturated(space, g) for g in init), "n": len(init)} if warm else None
    if init is not None:  # the drawn population is the one run() would draw: reuse it
        for fid in es.initial_fidelities:
            es.tell(init, fid, obj.evaluator(seed)(init, fid))
        es.select()
    es.run(obj.evaluator(seed))
    n_lf = sum(r["fidelity"] == "lf" for r in es.archive)
    n_hf = sum(r["fidelity"] == "hf" for r in es.archive)
    stage1 = {"best_true_on_front": max(obj.true(g) for g, _, _ in es.front()), "generations": es.generation,
              "hv": es.history[-1], "seconds": time.perf_counter() - t0,
              "population_memory_fraction": float(np.mean([space.memory(g) for g in es.population]) / space.budget)}
    obs = [(np.array(r["genome"]), r["score"], r["memory"]) for r in es.archive if r["fidelity"] == "hf"]
    iters = PAPER["iterations"] if stage2 else 0
    tr = TrustRegionSearch(space, imp_q, imp_r, TrustRegionSettings(q=PAPER["q"], iterations=iters), seed, obs)
    t1 = time.perf_counter()
    while batch := tr.ask():
        tr.tell(batch, obj.evaluator(seed)(batch, "hf"))
    n_hf += sum(o >= 0 for o in tr.origin)
    out = {"stage1": stage1, "stage2_seconds": time.perf_counter() - t1, "seeded": seeded}
    out["pick"] = pick(space, tr, obj, imp_q, imp_r, seed)
    out["pick_by_utility"] = pick(space, tr, obj, imp_q, imp_r, seed, criterion="utility")
    out["pick_by_score"] = pick(space, tr, obj, imp_q, imp_r, seed, criterion="score")
    out["pick_by_utility_no_fill"] = pick(space, tr, obj, imp_q, imp_r, seed, fill=False, criterion="utility")
    out["stage1_best_true"] = stage1["best_true_on_front"]
    out["cost"] = {"lf": n_lf, "hf": n_hf + out["pick"]["n_reeval"],
                   "hf_equivalents": hf_equivalents(n_lf, n_hf + out["pick"]["n_reeval"])}
    return out


def run_random(space, obj: Objective, n_total: int, seed: int) -> dict:
    """Random search with ``n_total`` HF evaluations, its own noise-robust pick included."""
    n_reeval = PAPER["top_k"] * PAPER["reeval_seeds"]
    genomes = random_genomes(space, max(1, n_total - n_reeval), np.random.default_rng([seed, 7919]))
    ev = obj.evaluator(seed)
    obs = [(g, s, space.memory(g)) for g, s in zip(genomes, ev(genomes, "hf"), strict=True)]
    flat = np.full(space.n_blocks, 0.5)
    tr = TrustRegionSearch(space, flat, flat, TrustRegionSettings(iterations=0), seed, obs)
    out = {"pick": pick(space, tr, obj, flat, flat, seed, fill=True), "evaluations": len(genomes)}
    out["cost"] = {"hf": len(genomes) + out["pick"]["n_reeval"], "hf_equivalents": len(genomes) + out["pick"]["n_reeval"]}
    return out


def run_instance(model: str, kind: str, seed: int, norms: list[str], baselines: bool = True) -> dict:
    space = make_space(model)
    obj = Objective(space, kind, seed)
    # the shared hypervolume reference: the smallest plan and the budget's uniform plan at HF
    ref = shared_hv_reference([obj.observe(space.uniform(2, 4), "hf", seed),
                               obj.observe(uniform_genomes(space, 8)[0], "hf", seed)])
    res = {"model": model, "profile": kind, "seed": seed, "uniform4_true": obj.true(space.uniform(4, 8)),
           "optimum_true": optimum(space, obj), "hv_reference": ref}
    res["autoqra"] = run_search(space, obj, "max", True, seed, ref)
    if baselines:
        res["no_warm_start"] = run_search(space, obj, "max", False, seed, ref)
        n_total = equal_cost_evaluations(res["autoqra"]["cost"]["hf_equivalents"])
        res["random"] = run_random(space, obj, n_total, seed)
    for norm in norms:
        if norm != "max":
            res[f"autoqra_{norm}"] = run_search(space, obj, norm, True, seed, ref)
    return res


PICK_RULES = ("pick", "pick_by_utility", "pick_by_score", "pick_by_utility_no_fill")


def summarise(rows: list[dict]) -> dict:
    """Per (model, profile): each method's mean true score, worst memory use, plans within one
    upgrade, AutoQRA's wins over it; AutoQRA's pick rules compared on the same runs."""
    out = {}
    for model in MODELS:
        for kind in PROFILES:
            sub = [r for r in rows if r["model"] == model and r["profile"] == kind]
            if not sub:
                continue
            methods = [k for k in sub[0] if isinstance(sub[0][k], dict) and "pick" in sub[0][k]]
            cell = {"n_seeds": len(sub), "uniform4_true_mean": float(np.mean([r["uniform4_true"] for r in sub])),
                    "optimum_true_mean": float(np.mean([r["optimum_true"] for r in sub]))}
            for m in methods:
                cell[m] = {"true_mean": float(np.mean([r[m]["pick"]["true"] for r in sub])),
                           "memory_fraction_min": min(r[m]["pick"]["memory_fraction"] for r in sub),
                           "within_one_upgrade": sum(r[m]["pick"]["within_one_upgrade"] for r in sub),
                           "hf_equivalents_mean": float(np.mean([r[m]["cost"]["hf_equivalents"] for r in sub]))}
                if m != "autoqra":
                    cell[m]["autoqra_at_least_as_good"] = sum(r["autoqra"]["pick"]["true"] >= r[m]["pick"]["true"]
                                                              for r in sub)
            cell["autoqra_pick_rules"] = {
                rule: {"true_mean": float(np.mean([r["autoqra"][rule]["true"] for r in sub])),
                       "memory_fraction_min": min(r["autoqra"][rule]["memory_fraction"] for r in sub),
                       "within_one_upgrade": sum(r["autoqra"][rule]["within_one_upgrade"] for r in sub)}
                for rule in PICK_RULES}
            cell["autoqra_stage1_best_true_mean"] = float(np.mean([r["autoqra"]["stage1"]["best_true_on_front"]
                                                                   for r in sub]))
            out[f"{model}/{kind}"] = cell
    return out


def targets(rows: list[dict], summary: dict) -> dict:
    picks = [r[m]["pick"] for r in rows for m in ("autoqra", "no_warm_start", "random") if m in r]
    wins = [c[m]["autoqra_at_least_as_good"] >= min(4, c["n_seeds"] - 1) for c in summary.values()
            for m in ("no_warm_start", "random") if m in c]
    return {"every_final_plan_within_one_upgrade": all(p["within_one_upgrade"] for p in picks),
            "autoqra_at_least_as_good_in_4_of_5_everywhere": all(wins) if wins else None}  # None: not run


def print_table(summary: dict) -> None:
    head = (f"{'model/profile':<24}{'AutoQRA':>9}{'w/o warm':>9}{'random':>9}{'unif-4':>9}{'optimum':>9}"
            f"{'  mem/B min (A, W, R)':>22}{'  A>=W':>7}{'A>=R':>6}{'  cost':>7}")
    print(head)
    print("-" * len(head))
    none = {"true_mean": np.nan, "memory_fraction_min": np.nan, "autoqra_at_least_as_good": 0}
    for key, c in summary.items():
        a, w, r = c["autoqra"], c.get("no_warm_start", none), c.get("random", none)
        mem = f"{a['memory_fraction_min']:.3f} {w['memory_fraction_min']:.3f} {r['memory_fraction_min']:.3f}"
        print(f"{key:<24}{a['true_mean']:>9.4f}{w['true_mean']:>9.4f}{r['true_mean']:>9.4f}"
              f"{c['uniform4_true_mean']:>9.4f}{c['optimum_true_mean']:>9.4f}{mem:>22}"
              f"{w['autoqra_at_least_as_good']:>5}/{c['n_seeds']}{r['autoqra_at_least_as_good']:>4}/{c['n_seeds']}"
              f"{a['hf_equivalents_mean']:>7.0f}")
        rules = "  ".join(f"{k.removeprefix('pick_by_') if k != 'pick' else 'union'} {v['true_mean']:.4f}"
                          f" ({v['within_one_upgrade']}/{c['n_seeds']} at B)" for k, v in c["autoqra_pick_rules"].items())
        print(f"{'':<6}AutoQRA pick rules: {rules}")
        for m in (k for k in c if k.startswith("autoqra_") and k in MULTI):
            print(f"{'':<6}{m:<18}{c[m]['true_mean']:>9.4f}   (AutoQRA[max] >= it in "
                  f"{c[m]['autoqra_at_least_as_good']}/{c['n_seeds']})")


MULTI = tuple(f"autoqra_{n}" for n in NORMS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--norms", nargs="*", default=[], choices=list(NORMS),
                    help="also run AutoQRA with these prior normalisations (default: only 'max')")
    ap.add_argument("--no-baselines", action="store_true",
                    help="run AutoQRA only (with --norms: the normalisation comparison alone)")
    ap.add_argument("--out", default="benchmarks/results/search_sim.json")
    args = ap.parse_args(argv)
    rows, t0 = [], time.perf_counter()
    for model in args.models:
        for kind in args.profiles:
            for seed in range(args.seeds):
                rows.append(run_instance(model, kind, seed, args.norms, not args.no_baselines))
                done = {k: round(v["pick"]["true"], 4) for k, v in rows[-1].items() if isinstance(v, dict)}
                print(f"{model} {kind} seed {seed}: {done} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarise(rows)
    print_table(summary)
    result = {"settings": {**PAPER, "hf_sigma": HF_SIGMA, "lf_sigma": LF_SIGMA, "prior_sigma": PRIOR_SIGMA,
                           "lf_hf_cost_ratio": LF_UNITS / HF_UNITS, "seeds": args.seeds},
              "summary": summary, "targets": targets(rows, summary), "runs": rows,
              "seconds": time.perf_counter() - t0, "manifest": build_manifest("benchmark_search_sim", vars(args))}
    atomic_write_json(args.out, result)
    print(f"targets: {result['targets']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
