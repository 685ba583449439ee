"""The statistics behind Table 5's claims (``autoqra.report.claims``): rank correlations with
bootstrap intervals, the first-hit distribution of random search, and the cross-validated top-3
hit rate of the performance model. numpy and pandas only; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

TEST_SIZE = 8
N_BOOT = 2000


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (Pearson of average ranks); NaN for fewer than 3 points or a constant variable."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def spearman_ci(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """ρ with a percentile bootstrap interval over the (x, y) pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    reps = [spearman(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n_boot))] if len(x) >= 3 else []
    reps = np.asarray([r for r in reps if np.isfinite(r)])
    lo, hi = (np.quantile(reps, [0.025, 0.975]) if len(reps) else (np.nan, np.nan))
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": int(len(x))}


def first_hit_distribution(n_total: int, k_hits: int) -> np.ndarray:
    """P(first hit at position j), j = 1..N-k+1, for k hits placed uniformly among N positions."""
    j = np.arange(1, n_total - k_hits + 2)
    survive = np.array([math.comb(n_total - jj, k_hits) for jj in range(0, n_total - k_hits + 2)], float)
    survive /= math.comb(n_total, k_hits)
    return survive[j - 1] - survive[j]


def evaluations_to_target(auto_scores: Sequence[float | None], random_scores: Sequence[float | None]) -> dict | None:
    """Claim 4's numbers from the two searchers' HF scores in evaluation order (None = failed/infeasible)."""
    a = [s for s in auto_scores if s is not None and np.isfinite(s)]
    r = np.array([s if s is not None and np.isfinite(s) else -np.inf for s in random_scores], float)
    if not a or not np.isfinite(r).any():
        return None
    target = min(max(a), float(r.max()))
    n_auto = 1 + next(i for i, s in enumerate(auto_scores) if s is not None and np.isfinite(s) and s >= target)
    k = int((r >= target).sum())
    p = first_hit_distribution(len(r), k)
    cdf = np.cumsum(p)
    j = np.arange(1, len(p) + 1)
    return {"target": target, "n_auto": n_auto, "n_random": len(r), "k_random": k,
            "random_mean": float((j * p).sum()), "random_lo": int(j[np.searchsorted(cdf, 0.025)]),
            "random_hi": int(j[min(np.searchsorted(cdf, 0.975), len(j) - 1)]),
            "p_random_le": float(cdf[min(n_auto, len(p)) - 1]), "p_random_lt": float(cdf[min(n_auto - 2, len(p) - 1)]) if n_auto > 1 else 0.0}


class ArchiveSpace:
    """What ``autoqra.search.surrogate.features`` needs of a search space, from archive records:
    the ladders, the budget and each genome's recorded memory."""

    def __init__(self, bits: Sequence[int], ranks: Sequence[int], budget: float, n_blocks: int,
                 memory: Mapping[bytes, float]):
        self.bits, self.ranks, self.budget = tuple(sorted(bits)), tuple(sorted(ranks)), float(budget)
        self.n_blocks, self._memory = int(n_blocks), memory

    def memory(self, g: np.ndarray) -> float:
        return self._memory[np.asarray(g, dtype=np.int64).tobytes()]


def lf_hf_pairs(archives: Sequence[Sequence[Mapping]]) -> list[tuple[np.ndarray, float, float, float]]:
    """(genome, LF score, HF score, memory) of every distinct plan with both scores in the archives."""
    lf, hf, mem, genome = {}, {}, {}, {}
    for archive in archives:
        for rec in archive:
            if rec.get("score") is None or not rec.get("genome"):
                continue
            g = np.asarray(rec["genome"], dtype=np.int64)
            key = g.tobytes()
            (lf if rec["fidelity"] == "lf" else hf)[key] = float(rec["score"])
            mem[key], genome[key] = float(rec["memory"]), g
    return [(genome[k], lf[k], hf[k], mem[k]) for k in lf if k in hf]


def top3_hit_rates(pairs, space: ArchiveSpace, imp_q, imp_r, repeats: int = 20, test_size: int = TEST_SIZE,
                   seed: int = 0) -> dict[str, Any] | None:
    """Claim 5's numbers: top-3 hit rate of the performance model and of LF alone on test sets of
    ``test_size`` plans (a generation's worth), the model fit on the other plans.

    The interval is honest about how few independent test sets the pairs allow: each repetition splits
    the plans into K = n // test_size *disjoint* test folds; the interval is mean Δ ± t_{K−1} · s/√K
    with s the fold-to-fold sd (averaged over repetitions; repeating only averages out the split, it
    adds no independent data). Overlapping random splits with a percentile interval, as before,
    understate it."""
    from autoqra.search.surrogate import PerformanceModel, feature_matrix

    k = len(pairs) // test_size
    if k < 2:
        return None
    genomes = [p[0] for p in pairs]
    lf, hf = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])
    X = feature_matrix(space, genomes, lf, imp_q, imp_r)
    rng = np.random.default_rng(seed)
    model_hits, lf_hits, sds = [], [], []
    for r in range(repeats):
        order = rng.permutation(len(pairs))
        fold_d = []
        for f in range(k):
            test = order[f * test_size:(f + 1) * test_size]
            train = np.setdiff1d(np.arange(len(pairs)), test)
            pm = PerformanceModel(min_pairs=4, seed=r * k + f).fit(X[train], hf[train])
            truth = set(test[np.argsort(-hf[test])[:3]])
            m_hit = len(truth & set(test[np.argsort(-pm.predict(X[test]))[:3]])) / 3
            l_hit = len(truth & set(test[np.argsort(-lf[test])[:3]])) / 3
            model_hits.append(m_hit)
            lf_hits.append(l_hit)
            fold_d.append(m_hit - l_hit)
        sds.append(np.std(fold_d, ddof=1))
    d = float(np.mean(model_hits) - np.mean(lf_hits))
    half = float(stats.t.ppf(0.975, k - 1) * np.mean(sds) / math.sqrt(k))
    return {"model": float(np.mean(model_hits)), "lf": float(np.mean(lf_hits)), "delta": d,
            "lo": d - half, "hi": d + half, "n": len(pairs), "folds": k}


def average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``, faster)."""
    _, inv, cnt = np.unique(np.asarray(v, float), return_inverse=True, return_counts=True)
    return (np.cumsum(cnt) - (cnt - 1) / 2.0)[inv.ravel()]


def partial_spearman(bits: np.ndarray, ranks: np.ndarray, controls: np.ndarray | None) -> float:
    """Spearman ρ of bits and ranks with ``controls`` (columns, e.g. the blocks' I_q and I_r) partialled
    out: Pearson of the residuals of the rank-transformed variables regressed on the ranked controls."""
    rk = average_ranks
    x, y = rk(bits), rk(ranks)
    if controls is not None and controls.size:
        z = np.column_stack([np.ones(len(x)), *[rk(c) for c in np.asarray(controls, float).T]])
        x = x - z @ np.linalg.lstsq(z, x, rcond=None)[0]
        y = y - z @ np.linalg.lstsq(z, y, rcond=None)[0]
    if len(x) < 3 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def plans_partial_spearman_ci(plans: Sequence[Mapping], priors: tuple | None, n_boot: int = N_BOOT,
                              seed: int = 0) -> dict[str, Any]:
    """Claim 6 over many final plans: ρ(bits, rank | I_q, I_r) over all their blocks, interval by a
    bootstrap over *plans* (a plan's blocks are chosen together, so they are not independent)."""
    blocks = [(np.asarray(p["bits"], float), np.asarray(p["ranks"], float)) for p in plans]
    ctrl = None if priors is None else np.column_stack([np.asarray(v, float) for v in priors])

    def rho(idx):
        b = np.concatenate([blocks[i][0] for i in idx])
        r = np.concatenate([blocks[i][1] for i in idx])
        c = None if ctrl is None else np.vstack([ctrl[:len(blocks[i][0])] for i in idx])
        return partial_spearman(b, r, c)

    n = len(blocks)
    point = rho(range(n)) if n else float("nan")
    rng = np.random.default_rng(seed)
    reps = np.array([rho(rng.integers(0, n, n)) for _ in range(n_boot)]) if n >= 2 else np.array([])
    reps = reps[np.isfinite(reps)]
    lo, hi = np.quantile(reps, [0.025, 0.975]) if len(reps) else (np.nan, np.nan)
    return {"rho": point, "lo": float(lo), "hi": float(hi), "n": int(sum(len(b) for b, _ in blocks)), "plans": n}


def hf_cost_to_target(auto_scores: Sequence[float | None], auto_cost: float, stage0_cost: float,
                      random_scores: Sequence[float | None], target: float) -> dict[str, Any] | None:
    """Claim 4 in HF-equivalents against a target set by a fair baseline.

    AutoQRA's cost = Stage 0 + its search's HF-equivalents spread evenly over its HF observations, up to
    its first feasible observation ≥ ``target`` (None if it never reaches it). Random search: each plan
    costs 1 HF-equivalent and is drawn with replacement from the pool of its ``N`` measured plans, so the
    draws to the first hit are geometric with p = k/N (the bootstrap over the pool); p's uncertainty
    enters through its Clopper-Pearson 95 % bounds: ``p_random_le`` (chance random needs ≤ AutoQRA's
    cost) uses the upper bound, ``p_random_lt`` (chance it needs fewer) the lower one."""
    obs = [s if s is not None and np.isfinite(s) else None for s in auto_scores]
    pool = np.array([s if s is not None and np.isfinite(s) else -np.inf for s in random_scores], float)
    if not obs or not len(pool):
        return None
    hit = next((i for i, s in enumerate(obs) if s is not None and s >= target), None)
    per = auto_cost / len(obs)
    cost = None if hit is None else stage0_cost + per * (hit + 1)
    n, k = len(pool), int((pool >= target).sum())
    p_lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    p_hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    out = {"target": target, "auto_cost": cost, "n_random": n, "k_random": k, "p": k / n,
           "random_median": (math.log(0.5) / math.log1p(-k / n)) if 0 < k < n else (1.0 if k == n else math.inf)}
    if cost is not None:
        out["p_random_le"] = 1 - (1 - p_hi) ** math.floor(cost)
        out["p_random_lt"] = 1 - (1 - p_lo) ** max(math.ceil(cost) - 1, 0)
    return out
