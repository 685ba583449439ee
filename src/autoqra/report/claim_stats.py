"""The statistics behind Table 5's claims (``autoqra.report.claims``): rank correlations with
bootstrap intervals, the first-hit distribution of random search, and the cross-validated top-3
hit rate of the performance model. numpy and pandas only; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

TEST_SIZE, SPLITS = 8, 200
N_BOOT = 2000


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (Pearson of average ranks); NaN for fewer than 3 points or a constant variable."""
    x, y = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(x.rank().corr(y.rank()))


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


def top3_hit_rates(pairs, space: ArchiveSpace, imp_q, imp_r, splits: int = SPLITS, test_size: int = TEST_SIZE,
                   seed: int = 0) -> dict[str, Any] | None:
    """Claim 5's numbers: mean top-3 hit rate of the performance model and of LF alone over random splits."""
    from autoqra.search.surrogate import PerformanceModel, feature_matrix

    if len(pairs) < test_size + 4:
        return None
    genomes = [p[0] for p in pairs]
    lf, hf = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])
    X = feature_matrix(space, genomes, lf, imp_q, imp_r)
    rng = np.random.default_rng(seed)
    model_hits, lf_hits = [], []
    for s in range(splits):
        test = rng.permutation(len(pairs))[:test_size]
        train = np.setdiff1d(np.arange(len(pairs)), test)
        pm = PerformanceModel(min_pairs=4, seed=s).fit(X[train], hf[train])
        truth = set(test[np.argsort(-hf[test])[:3]])
        model_hits.append(len(truth & set(test[np.argsort(-pm.predict(X[test]))[:3]])) / 3)
        lf_hits.append(len(truth & set(test[np.argsort(-lf[test])[:3]])) / 3)
    d = np.array(model_hits) - np.array(lf_hits)
    boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(N_BOOT)]
    return {"model": float(np.mean(model_hits)), "lf": float(np.mean(lf_hits)), "delta": float(d.mean()),
            "lo": float(np.quantile(boot, 0.025)), "hi": float(np.quantile(boot, 0.975)), "n": len(pairs)}
